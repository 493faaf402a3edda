"""Model catalog: metadata from the graph, signatures, canonical bytes, CRDT merge; the model directory and CLI."""

import dataclasses
import json

import msgpack
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from arcnet.mesh.identity import Identity
from arcnet.mesh.wire import encode
from arcnet.runtime import models as M
from arcnet.runtime.catalog import (
    Catalog,
    CatalogError,
    ModelEntry,
    Score,
    describe,
    entry_from_bytes,
    entry_to_bytes,
    sign_meta,
    verify_entry,
    version_key,
)
from arcnet.runtime.store import MemoryModelStore, ModelDir, StoreError, content_id

ALICE = Identity.from_seed(bytes([1]) * 32)
BOB = Identity.from_seed(bytes([2]) * 32)
CLF = M.mlp_classifier()


def entry(name="clf", version="1.0.0", who=ALICE, t=1000, model=CLF, parent="", task="classify", scores=None):
    meta = describe(
        model, name=name, version=version, task=task, model_id=content_id(model),
        publisher=who.peer_id, published_s=t, parent_id=parent, scores=scores or {"accuracy": 0.9},
    )  # fmt: skip
    return sign_meta(meta, who)


def test_metadata_reads_the_onnx_graph():
    m = entry().meta
    assert [(t.name, t.dtype, t.shape) for t in m.inputs] == [("x", "float32", ["n", "16"])]
    assert [t.name for t in m.outputs] == ["probs", "logits", "embedding"]
    assert m.params == 16 * 32 + 32 + 32 * 4 + 4
    assert m.macs_per_item == 16 * 32 + 32 * 4
    assert m.size_bytes == len(CLF) and m.model_id == content_id(CLF)
    s = describe(M.text_scorer(), name="s", version="1", task="score", model_id="blake3:" + "0" * 64,
                 publisher=ALICE.peer_id, published_s=1)  # fmt: skip
    assert [(t.name, t.dtype) for t in s.inputs] == [("ids", "int64"), ("mask", "float32")]


def test_signed_entry_roundtrips_and_tampering_is_refused():
    e = entry()
    verify_entry(e)
    data = entry_to_bytes(e)
    assert entry_from_bytes(data) == e
    forged = ModelEntry(dataclasses.replace(e.meta, version="1.0.1"), e.signature)
    with pytest.raises(CatalogError, match="bad signature"):
        verify_entry(forged)
    with pytest.raises(CatalogError, match="another publisher"):
        sign_meta(e.meta, BOB)
    with pytest.raises(CatalogError):
        entry_from_bytes(data[:-3])
    with pytest.raises(CatalogError, match="model name"):
        entry(name="Bad Name")
    with pytest.raises(CatalogError, match="version"):
        entry(version="v1")
    unsorted = dataclasses.replace(e.meta, scores=[Score("z", 1.0), Score("a", 1.0)])
    with pytest.raises(CatalogError, match="sorted"):
        sign_meta(unsorted, ALICE)


def test_non_canonical_encoding_does_not_verify():
    e = entry()
    fields = msgpack.unpackb(entry_to_bytes(e), raw=False)
    meta = fields[2]
    assert meta[11] == 0.0
    meta[11] = 0  # latency_ms_p50 as an int, not a float: same value, other bytes
    reencoded = msgpack.packb(fields, use_bin_type=True)
    assert reencoded != entry_to_bytes(e)
    got = entry_from_bytes(reencoded)  # decoded (ints are accepted for floats) ...
    assert entry_to_bytes(got) == entry_to_bytes(e)  # ... and verified on its canonical bytes
    meta[13] = 0.0  # a changed value (cost_per_1k) is caught by the signature
    with pytest.raises(CatalogError, match="bad signature"):
        entry_from_bytes(msgpack.packb(fields, use_bin_type=True))


def test_versions_sort_numerically():
    assert sorted(["1.10.0", "1.9.1", "1.2", "2"], key=version_key) == ["1.2", "1.9.1", "1.10.0", "2"]


def test_catalog_queries_and_lineage():
    cat = Catalog()
    parent = entry(version="1.0.0")
    child_model = M.mlp_classifier(seed=5, train_n=64)
    child = entry(version="1.10.0", model=child_model, parent=parent.meta.model_id, t=2000)
    grandchild_model = M.mlp_classifier(seed=6, train_n=64)
    grandchild = entry(version="1.9.0", model=grandchild_model, parent=child.meta.model_id, t=3000)
    assert cat.merge([grandchild, child, parent]) == 3
    assert cat.get("clf").meta.version == "1.10.0"  # numeric, not lexical
    assert cat.resolve("clf@1.0.0") == parent
    assert cat.resolve(child.meta.model_id) == child
    assert [e.meta.version for e in cat.lineage("clf@1.9.0")] == ["1.9.0", "1.10.0", "1.0.0"]
    assert cat.children(parent.meta.model_id) == [child]
    assert [e.meta.version for e in cat.entries("classify")] == ["1.0.0", "1.9.0", "1.10.0"]
    assert cat.entries("score") == []


def test_first_publish_wins_and_bad_entries_are_counted():
    cat = Catalog()
    first = entry(t=1000)
    rival = entry(t=1500, who=BOB, model=M.mlp_classifier(seed=9, train_n=64))
    assert cat.add(rival)
    assert cat.add(first)  # earlier publish replaces the later one
    assert not cat.add(rival)  # and keeps winning
    assert not cat.add(first)  # duplicate
    assert cat.get("clf", "1.0.0") == first
    forged = ModelEntry(dataclasses.replace(first.meta, name="other"), first.signature)
    assert cat.merge([forged, entry(name="ok")]) == 1
    st_ = cat.statistics()
    assert (st_["replaced"], st_["conflicts_lost"], st_["duplicates"], st_["rejected"]) == (1, 1, 1, 1)
    full = Catalog(entries_max=1)
    full.add(first)
    with pytest.raises(CatalogError, match="full"):
        full.add(entry(name="two"))


_POOL = [
    entry(name=n, version=v, who=w, t=t, model=M.mlp_classifier(seed=s, train_n=64))
    for (n, v, w, t, s) in [
        ("a", "1", ALICE, 10, 1), ("a", "1", BOB, 10, 2), ("a", "1", BOB, 9, 3), ("a", "2", ALICE, 11, 1),
        ("b", "1.0", BOB, 5, 4), ("b", "1.0", ALICE, 5, 4), ("c", "3", ALICE, 1, 5),
    ]
]  # fmt: skip


@settings(max_examples=40)
@given(st.lists(st.sampled_from(range(len(_POOL))), max_size=14), st.randoms(use_true_random=False))
def test_merge_is_order_independent(picks, rnd):
    """Any two peers that saw the same entries, in any order and grouping, hold the same catalog."""
    entries = [_POOL[i] for i in picks]
    a = Catalog()
    a.merge(entries)
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    b, c = Catalog(), Catalog()
    half = len(shuffled) // 2
    b.merge(shuffled[:half])
    c.merge(shuffled[half:])
    b.merge(c)  # catalog-to-catalog merge
    b.merge(a)  # idempotent with respect to what it already holds
    assert a.digest() == b.digest()
    assert [entry_to_bytes(e) for e in a.entries()] == [entry_to_bytes(e) for e in b.entries()]


def test_model_dir_roundtrip_and_corruption(tmp_path):
    d = ModelDir(tmp_path)
    mid = d.put(CLF)
    assert mid == content_id(CLF) and mid in d and d.get(mid) == CLF
    e = entry()
    d.save_entry(e)
    assert d.load_catalog().get("clf") == e
    (tmp_path / "catalog" / "junk@1.entry").write_bytes(b"\x00garbage")
    assert [type(x).__name__ for _, x in d.iter_entries()] == ["ModelEntry", "CatalogError"]
    path = tmp_path / "models" / (mid.split(":")[1] + ".onnx")
    path.write_bytes(CLF[:-1] + b"\x00")
    with pytest.raises(StoreError, match="corrupt"):
        d.get(mid)
    with pytest.raises(KeyError):
        d.get("blake3:" + "1" * 64)
    with pytest.raises(StoreError, match="content id"):
        d.get("../../etc/passwd")
    mem = MemoryModelStore()
    assert mem.get(mem.put(CLF)) == CLF


def test_cli_publish_and_ls(tmp_path):
    from arcnet.cli.main import cli

    def run(m, args, **kw):
        return CliRunner().invoke(cli, ["model", *args], **kw)

    model = None

    (tmp_path / "clf.onnx").write_bytes(CLF)
    (tmp_path / "sc.onnx").write_bytes(M.text_scorer())
    ALICE.save(tmp_path / "dd" / "peer.key")
    base = ["--data-dir", str(tmp_path / "dd")]
    r = run(model, ["publish", str(tmp_path / "clf.onnx"), "--name", "clf", "--version", "1.0.0", "--task", "classify",
                    "--score", "accuracy=0.88", "--json", *base])  # fmt: skip
    assert r.exit_code == 0, r.output
    pub = json.loads(r.output)
    assert pub["model_id"] == content_id(CLF) and pub["latency_ms_p50"] > 0 and pub["scores"] == {"accuracy": 0.88}
    r = run(model, ["publish", str(tmp_path / "sc.onnx"), "--name", "scorer", "--version", "1", "--task", "score",
                    "--no-profile", "--parent", "clf@1.0.0", *base])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "published scorer@1 (score)" in r.output
    r = run(model, ["publish", str(tmp_path / "sc.onnx"), "--name", "clf", "--version", "1.0.0", "--task", "x", *base])
    assert r.exit_code != 0
    r = run(model, ["ls", "--json", *base])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [(m["name"], m["version"]) for m in out["models"]] == [("clf", "1.0.0"), ("scorer", "1")]
    assert out["models"][1]["parent"] == "clf@1.0.0" and out["invalid"] == []
    r = run(model, ["ls", "--task", "score", *base], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "scorer" in r.output and "clf " not in r.output
    r = run(model, ["publish", str(tmp_path / "clf.onnx"), "--name", "x", "--version", "1", "--task", "t",
                    "--data-dir", str(tmp_path / "nokey")])  # fmt: skip
    assert r.exit_code == 2 and "arcnet init" in r.output


def test_entry_is_a_wire_message():
    e = entry()
    assert encode(e) == entry_to_bytes(e)
