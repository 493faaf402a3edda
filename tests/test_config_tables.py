"""The [blob] and [audit] tables of config.toml: validation, precedence, and the documented defaults."""

import dataclasses
import re
from pathlib import Path

import pytest

from arcnet.audit.service import AuditConfig
from arcnet.blobstore.service import BlobConfig
from arcnet.mesh.config import ConfigError, default_config_text, load_config
from arcnet.mesh.peer import DaemonError
from arcnet.mesh.stack import audit_config, blob_config

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "config.toml"


def _load(tmp_path, text):
    p = tmp_path / "config.toml"
    p.write_text(text)
    return load_config(p)


def test_tables_reach_the_service_configs(tmp_path):
    cfg = _load(tmp_path, "[blob]\ndurable = false\nfetches_max = 7\ndiscover_interval_s = 2\n"
                          "path_roots = '/srv/stage'\n[audit]\ncheckpoint_interval_s = 5\nwitnesses = 3\n")
    assert cfg.blob == {"durable": False, "fetches_max": 7, "discover_interval_s": 2.0, "path_roots": "/srv/stage"}
    b = blob_config(cfg, environ={})
    assert (b.durable, b.fetches_max, b.discover_interval_s, b.path_roots) == (False, 7, 2.0, "/srv/stage")
    assert type(b.discover_interval_s) is float and b.stall_timeout_s == BlobConfig().stall_timeout_s
    a = audit_config(cfg, environ={})
    assert (a.checkpoint_interval_s, a.witnesses, a.tick_s) == (5.0, 3, 1.0)
    assert a.witness_interval_s == 5.0  # follows checkpoint_interval_s unless given, as with the variables


def test_no_tables_means_defaults(tmp_path):
    cfg = _load(tmp_path, "[peer]\nregion = 'west'\n")
    assert blob_config(cfg, environ={}) == BlobConfig()
    assert audit_config(cfg, environ={}) == AuditConfig()
    assert load_config(EXAMPLE).blob == {} and _load(tmp_path, default_config_text()).audit == {}


def test_gossip_keys_appended_to_the_init_text_stay_in_gossip(tmp_path):
    cfg = _load(tmp_path, default_config_text() + "membership_probe_interval_s = 0.5\n")  # as LocalMesh does
    assert cfg.gossip == {"membership_probe_interval_s": 0.5} and cfg.blob == {} and cfg.audit == {}


def test_environment_overrides_the_table(tmp_path):
    cfg = _load(tmp_path, "[blob]\ndurable = true\nfetches_max = 7\n[audit]\ncheckpoint_interval_s = 30\n")
    b = blob_config(cfg, environ={"ARCNET_BLOB_DURABLE": "0"})
    assert b.durable is False and b.fetches_max == 7
    a = audit_config(cfg, environ={"ARCNET_AUDIT_CHECKPOINT_INTERVAL_S": "1"})
    assert a.checkpoint_interval_s == 1.0 and a.witness_interval_s == 1.0
    with pytest.raises(ConfigError, match="ARCNET_BLOB_FETCHES_MAX='many'"):
        blob_config(cfg, environ={"ARCNET_BLOB_FETCHES_MAX": "many"})
    with pytest.raises(DaemonError, match="ARCNET_AUDIT_WITNESSES"):
        audit_config(cfg, environ={"ARCNET_AUDIT_WITNESSES": "-1"})


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[blob]\nfetch_max = 3\n", "blob.fetch_max: unknown key (did you mean 'fetches_max'?)"),
        ("[audit]\nwitness = 3\n", "audit.witness: unknown key (did you mean 'witnesses'?)"),
        ("[audit]\nzzz = 3\n", "audit.zzz: unknown key (known: checkpoint_every_entries, "),
        ("[blb]\n", "blb: unknown section (did you mean [blob]?)"),
        ("[blob]\nfetches_max = 'many'\n", "blob.fetches_max: expected a whole number (a count), got string 'many'"),
        ("[blob]\nfetches_max = 0\n", "blob.fetches_max: 0 (a count) is out of range"),
        ("[blob]\ndurable = 1\n", "blob.durable: expected true or false, got integer 1"),
        ("[blob]\ncache_quota_bytes = -1\n", "blob.cache_quota_bytes: -1 (bytes) must not be negative"),
        ("[blob]\ninline_bytes_max = 2000000\n", "blob.inline_bytes_max: 2000000 (bytes) is out of range"),
        ("[blob]\ntest_corrupt_fraction = 2\n",
         "blob.test_corrupt_fraction: 2.0 (a fraction in [0, 1]) is out of range"),
        ("[audit]\ncheckpoint_interval_s = 0\n", "audit.checkpoint_interval_s: 0.0 (seconds) must be greater than 0"),
        ("[audit]\ntick_s = nan\n", "audit.tick_s: nan (seconds) is not a finite number"),
        ("[audit]\nexport_inline_max_bytes = 2000000\n", "audit.export_inline_max_bytes: 2000000 (bytes) is outside"),
        ("[audit]\nwitnesses = 1.5\n", "audit.witnesses: expected a whole number (a count), got float 1.5"),
        ("blob = 3\n", "blob: expected a table, got integer"),
    ],
)
def test_table_errors_are_one_clear_line(tmp_path, text, needle):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, text)
    msg = str(exc.value)
    assert needle in msg and str(tmp_path / "config.toml") in msg and "\n" not in msg


def test_example_documents_every_knob_with_its_default(tmp_path):
    """Uncommenting the example's [blob]/[audit] lines loads, and gives exactly the defaults."""
    text = EXAMPLE.read_text()
    documented = {"blob": set(), "audit": set()}
    out, section = [], None
    for line in text.splitlines():
        if m := re.match(r"\[(\w+)\]", line):
            section = m.group(1)
        m = re.match(r"# (\w+) = (.+?)\s+# ", line)
        if section in documented and m:
            documented[section].add(m.group(1))
            line = f"{m.group(1)} = {m.group(2)}"
        out.append(line)
    cfg = _load(tmp_path, "\n".join(out) + "\n")
    for section, cls in (("blob", BlobConfig), ("audit", AuditConfig)):
        assert documented[section] == {f.name for f in dataclasses.fields(cls)}
    assert blob_config(cfg, environ={}) == BlobConfig()
    assert audit_config(cfg, environ={}) == AuditConfig()
