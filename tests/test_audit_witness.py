"""Checkpoints as C2SP signed notes, cosignatures, and the witness core."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest

from arcnet.audit import merkle as M
from arcnet.audit.note import (
    COSIGNATURE_V1,
    ED25519,
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    cosignature_message,
    key_id,
    parse_note,
    parse_vkeys,
)
from arcnet.audit.witness import Conflict, Cosigned, Equivocation, Rejected, Witness, witness_signer
from arcnet.mesh import identity as I
from arcnet.mesh.identity import Identity

LOG_ID = Identity.from_seed(b"L" * 32)
WITNESS_ID = Identity.from_seed(b"W" * 32)
ORIGIN = f"arcnet.mesh/audit/{LOG_ID.peer_id}"
NOW = 1_700_000_000.0


def log_signer() -> Signer:
    return Signer(ORIGIN, LOG_ID, ED25519)


def tree(n: int, salt: str = "") -> M.MerkleTree:
    return M.MerkleTree.from_leaf_hashes(M.leaf_hash(f"{salt}{i}".encode()) for i in range(n))


# -- the note and checkpoint formats ------------------------------------------


def test_checkpoint_text_is_the_c2sp_format_byte_for_byte():
    root = bytes(range(32))
    cp = Checkpoint.sign(log_signer(), 48211, root)
    text, sig_line = cp.note.split("\n\n")
    assert text == f"{ORIGIN}\n48211\n{base64.b64encode(root).decode()}"
    assert cp.text == text + "\n"
    assert sig_line.startswith("\u2014 " + ORIGIN + " ") and sig_line.endswith("\n")
    raw = base64.b64decode(sig_line.split(" ")[2])
    # key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4], then the Ed25519 signature of the text
    want_kid = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + LOG_ID.public_key).digest()[:4]
    assert raw[:4] == want_kid == key_id(ORIGIN, ED25519, LOG_ID.public_key)
    assert I.verify(LOG_ID.public_key, cp.text.encode(), raw[4:])
    back = Checkpoint.parse(cp.note)
    assert (back.origin, back.size, back.root, back.note) == (ORIGIN, 48211, root, cp.note)
    assert back.verify(log_signer().verifier)


def test_vkeys_round_trip_and_name_the_key():
    v = log_signer().verifier
    vk = v.vkey()
    name, kid, b64 = vk.split("+", 2)
    assert name == ORIGIN and kid == v.key_id.hex()
    assert base64.b64decode(b64) == b"\x01" + LOG_ID.public_key
    assert Verifier.parse(vk) == v
    assert parse_vkeys(f"# trust\n\n{vk}\n{witness_signer(WITNESS_ID).verifier.vkey()}\n")[1].sig_type == COSIGNATURE_V1
    with pytest.raises(NoteError):
        Verifier.parse(vk.replace("+" + kid + "+", "+00000000+"))  # key id must match the key


def test_cosignature_is_the_tlog_cosignature_v1_format():
    cp = Checkpoint.sign(log_signer(), 7, bytes(32))
    w = witness_signer(WITNESS_ID)
    line = w.sign_line(cp.text, 1_679_315_147)
    raw = base64.b64decode(line.split(" ")[2])
    assert raw[:4] == hashlib.sha256(w.name.encode() + b"\n\x04" + WITNESS_ID.public_key).digest()[:4]
    assert struct.unpack(">Q", raw[4:12])[0] == 1_679_315_147
    msg = b"cosignature/v1\ntime 1679315147\n" + cp.text.encode()
    assert msg == cosignature_message(cp.text, 1_679_315_147)
    assert I.verify(WITNESS_ID.public_key, msg, raw[12:])
    both = cp.with_signature(line)
    assert both.verify(log_signer().verifier)
    sig = both.signature_by(w.verifier)
    assert sig is not None and w.verifier.verify_line(sig, cp.text)
    assert not w.verifier.verify_line(sig, cp.text.replace("7", "8"))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda n: n.replace("\n\n", "\n"),  # no blank line
        lambda n: n[:-1],  # no final newline
        lambda n: n.replace("\u2014", "-"),  # not an em dash
        lambda n: n.replace("\n7\n", "\n07\n"),  # leading zero
        lambda n: n.replace("\n7\n", "\n-7\n"),
        lambda n: n.replace("\n7\n", "\n7\x01\n"),  # control character
        lambda n: n.replace("=\n\n", "\n\n", 1),  # root base64 without padding
        lambda n: n.split("\n\n")[0] + "\n\n",  # no signature at all
        lambda n: n.replace("\n\n", "\nextension\n\n"),  # extension lines: this log writes none
    ],
)
def test_malformed_checkpoints_are_refused(mutate):
    note = Checkpoint.sign(log_signer(), 7, bytes(32)).note
    with pytest.raises(NoteError):
        Checkpoint.parse(mutate(note))


def test_non_canonical_base64_is_refused():
    note = Checkpoint.sign(log_signer(), 7, bytes(32)).note
    line = note.split("\n\n")[1]
    b64 = line.split(" ")[2].strip()
    # base64 of 68 bytes ends in one '=': the char before it carries 2 unused bits
    i = len(b64) - 2
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = alphabet[alphabet.index(b64[i]) ^ 1]
    assert base64.b64decode(b64[:i] + twin + b64[i + 1 :]) == base64.b64decode(b64)  # same bytes...
    with pytest.raises(NoteError, match="non-canonical"):
        parse_note(note.replace(b64, b64[:i] + twin + b64[i + 1 :]))  # ...but not the same text


def test_a_forged_or_foreign_signature_does_not_verify():
    mallory = Identity.from_seed(b"M" * 32)
    forged = Checkpoint.sign(Signer(ORIGIN, mallory, ED25519), 7, bytes(32))
    assert not forged.verify(log_signer().verifier)  # same name, other key: other key id
    good = Checkpoint.sign(log_signer(), 7, bytes(32))
    swapped = Checkpoint.parse(good.note.replace(good.note.split(" ")[-1], forged.note.split(" ")[-1]))
    assert not swapped.verify(log_signer().verifier)


# -- the witness --------------------------------------------------------------


def make_witness() -> Witness:
    return Witness(witness_signer(WITNESS_ID), [log_signer().verifier])


def test_witness_cosigns_a_growing_log_and_its_lines_verify():
    w = make_witness()
    t = tree(20)
    r = w.add_checkpoint(NOW, Checkpoint.sign(log_signer(), 5, t.root(5)).note)
    assert isinstance(r, Cosigned) and r.timestamp == int(NOW)
    cp = Checkpoint.sign(log_signer(), 20, t.root(20))
    r = w.add_checkpoint(NOW + 60, cp.note, 5, t.consistency_proof(5, 20))
    assert isinstance(r, Cosigned) and (r.size, r.root) == (20, t.root(20))
    assert cp.with_signature(r.line).verify(w.verifier)
    assert w.latest(ORIGIN) == (20, t.root(20))
    again = w.add_checkpoint(NOW + 61, cp.note, 20, [])  # the same head again: cosigned again
    assert isinstance(again, Cosigned)


def test_witness_asks_for_the_right_proof_and_refuses_bad_input():
    w = make_witness()
    t = tree(20)
    assert isinstance(w.add_checkpoint(NOW, Checkpoint.sign(log_signer(), 5, t.root(5)).note, 3), Conflict)
    w.add_checkpoint(NOW, Checkpoint.sign(log_signer(), 5, t.root(5)).note)
    c = w.add_checkpoint(NOW, Checkpoint.sign(log_signer(), 20, t.root(20)).note, 4, t.consistency_proof(4, 20))
    assert c == Conflict(ORIGIN, 5)
    older = w.add_checkpoint(NOW, Checkpoint.sign(log_signer(), 4, t.root(4)).note)
    assert isinstance(older, Rejected) and "older" in older.reason
    stranger = Identity.from_seed(b"S" * 32)
    other = Checkpoint.sign(Signer(f"arcnet.mesh/audit/{stranger.peer_id}", stranger), 1, bytes(32))
    assert isinstance(w.add_checkpoint(NOW, other.note), Rejected)  # not a log it watches
    forged = Checkpoint.sign(Signer(ORIGIN, stranger), 30, bytes(32))
    assert isinstance(w.add_checkpoint(NOW, forged.note, 5, []), Rejected)  # not the log's key
    assert isinstance(w.add_checkpoint(NOW, "garbage"), Rejected)
    assert w.latest(ORIGIN) == (5, t.root(5))  # none of that moved the witness


def test_an_equivocating_log_is_caught_with_evidence():
    """The log shows the witness one history, then a rewritten one."""
    w = make_witness()
    honest = tree(10)
    first = Checkpoint.sign(log_signer(), 10, honest.root())
    assert isinstance(w.add_checkpoint(NOW, first.note), Cosigned)

    # 1. same size, another root: evidence that convicts on its own
    fork = tree(10, salt="fork")
    second = Checkpoint.sign(log_signer(), 10, fork.root())
    ev = w.add_checkpoint(NOW + 1, second.note, 10, [])
    assert isinstance(ev, Equivocation) and ev.proven
    assert ev.check(log_signer().verifier)
    assert Checkpoint.parse(ev.first).root == honest.root() and Checkpoint.parse(ev.second).root == fork.root()
    assert not ev.check(Verifier(ORIGIN, Identity.from_seed(b"X" * 32).public_key))

    # 2. grown from a rewritten past: no valid consistency proof can exist
    grown_fork = tree(14, salt="fork")
    third = Checkpoint.sign(log_signer(), 14, grown_fork.root())
    ev2 = w.add_checkpoint(NOW + 2, third.note, 10, grown_fork.consistency_proof(10, 14))
    assert isinstance(ev2, Equivocation) and not ev2.proven and "consistency proof fails" in ev2.reason
    assert not ev2.check(log_signer().verifier)  # a bad proof alone convicts nobody

    assert w.latest(ORIGIN) == (10, honest.root())  # never cosigned the fork
    assert len(w.evidence(ORIGIN)) == 2
    assert w.statistics()["equivocations"] == 2


def test_split_view_between_two_witnesses_is_caught_when_they_compare():
    a, b = make_witness(), Witness(witness_signer(Identity.from_seed(b"V" * 32)), [log_signer().verifier])
    view_a = Checkpoint.sign(log_signer(), 8, tree(8).root())
    view_b = Checkpoint.sign(log_signer(), 8, tree(8, salt="b").root())
    assert isinstance(a.add_checkpoint(NOW, view_a.note), Cosigned)
    assert isinstance(b.add_checkpoint(NOW, view_b.note), Cosigned)
    # witnesses gossip what they cosigned: a is offered b's view
    ev = a.add_checkpoint(NOW, view_b.note, 8, [])
    assert isinstance(ev, Equivocation) and ev.check(log_signer().verifier)


def test_witness_state_survives_a_restart():
    w = make_witness()
    t = tree(9)
    w.add_checkpoint(NOW, Checkpoint.sign(log_signer(), 9, t.root()).note)
    snap = w.snapshot()
    w2 = make_witness()
    w2.restore(snap)
    assert w2.latest(ORIGIN) == (9, t.root())
    fork = Checkpoint.sign(log_signer(), 9, tree(9, salt="x").root())
    assert isinstance(w2.add_checkpoint(NOW, fork.note, 9, []), Equivocation)
