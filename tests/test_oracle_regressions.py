"""Regression tests for the divergences the differential oracle found (issue 12).

Each test is the reproduction of one place where tka and Tailscale's own
``tka`` disagreed, with Tailscale's answer (recorded from ``tka-oracle``)
written in; they need no oracle, so they run everywhere.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest

from tka.audit import audit_directory
from tka.aum import AUM, AUMKind, Signature, hash_to_text
from tka.authority import Authority
from tka.conformance import Context
from tka.conformance import resign as resign_kind
from tka.errors import StorageError, TKAError
from tka.key import Key
from tka.nlkeys import NLPrivate
from tka.sig import NodeKeySignature, SigKind, node_key_binary, resign_nks
from tka.state import State
from tka.storage.fs import FilesystemStore
from tka.storage.memory import MemoryStore

PRIVS = [NLPrivate.from_seed(bytes([i + 1]) * 32) for i in range(3)]
PUBS = [p.public().raw for p in PRIVS]
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def signed(aum: AUM, *signers: NLPrivate) -> AUM:
    return aum.with_signatures(tuple(Signature(p.key_id, p.sign(aum.sig_hash)) for p in signers))


def genesis(*keys: Key, ids: tuple[int, int] = (1, 2)) -> AUM:
    return AUM(AUMKind.CHECKPOINT, state=State(None, (bytes(32),), keys, *ids))


def open_memory(aums: list[AUM], hint: bytes | None = None) -> Authority:
    store = MemoryStore()
    store.commit_verified(aums)
    if hint is not None:
        store.set_last_active_ancestor(hint)
    return Authority.open(store)


def write_fs(root: Path, aums: list[AUM], hint: bytes | None) -> None:
    with FilesystemStore(root) as store:
        store.commit_verified(aums)
        if hint is not None:
            store.set_last_active_ancestor(hint)
    # A Tailscale directory has no lock file of ours.
    (root / ".tka-lock").unlink(missing_ok=True)


def aum_path(root: Path, h: bytes) -> Path:
    name = hash_to_text(h)
    return root / name[:2] / name


def open_fs(root: Path) -> Authority:
    with FilesystemStore(root) as store:
        return Authority.open(store)


# -- 1. UpdateKey with neither votes nor meta ---------------------------------------------


@pytest.mark.parametrize("meta", [None, {"name": "a"}])
def test_update_key_without_votes_or_meta_leaves_the_key_as_it_was(
    meta: dict[str, str] | None,
) -> None:
    g = genesis(Key(1, 2, PUBS[0], meta))
    upd = AUM(AUMKind.UPDATE_KEY, prev_aum_hash=g.hash, key_id=PUBS[0])
    (key,) = open_memory([g, upd]).state.keys or ()
    # Go: meta stays what it was (before the fix it became {}).
    assert key == Key(1, 2, PUBS[0], meta)


def test_update_key_with_an_empty_meta_map_clears_it() -> None:
    g = genesis(Key(1, 2, PUBS[0], {"name": "a"}))
    # An empty map that was decoded is present (not nil) for Go, so it
    # applies, though the canonical form (and the hash) drops it.
    plain = AUM(AUMKind.UPDATE_KEY, prev_aum_hash=g.hash, key_id=PUBS[0])
    fields = cbor2.loads(plain.to_bytes())
    fields[7] = {}
    upd = AUM.from_bytes(cbor2.dumps(fields, canonical=True))
    assert upd.meta == {}
    (key,) = open_memory([g, upd]).state.keys or ()
    assert not key.meta


# -- 2. non-canonical base32 names in Tailscale's directory -----------------------------------


def _alias(name: str, low_bits: int) -> str:
    v = ALPHABET.index(name[-1])
    return name[:-1] + ALPHABET[(v & 16) | low_bits]


def _small_chain() -> list[AUM]:
    g = signed(genesis(Key(1, 1, PUBS[0])), PRIVS[0])
    a = signed(AUM(AUMKind.NO_OP, prev_aum_hash=g.hash, key_id=b"a"), PRIVS[0])
    b = signed(AUM(AUMKind.NO_OP, prev_aum_hash=a.hash, key_id=b"b"), PRIVS[0])
    return [g, a, b]


@pytest.mark.parametrize("where", ["same directory", "directory listed first"])
@pytest.mark.parametrize("what", ["junk file", "directory", "copy"])
def test_an_alias_name_is_read_from_the_canonical_path(
    tmp_path: Path, what: str, where: str
) -> None:
    aums = _small_chain()
    write_fs(tmp_path, aums, aums[0].hash)
    head = aums[-1]
    path = aum_path(tmp_path, head.hash)
    # An even last character: the old reader took such a name as canonical.
    alias = path.with_name(_alias(path.name, 2))
    if where != "same directory":
        # Digits sort before letters: this directory is listed first.
        (tmp_path / "22").mkdir()
        alias = tmp_path / "22" / alias.name
    if what == "junk file":
        alias.write_bytes(b"junk")
    elif what == "directory":
        alias.mkdir()
    else:
        shutil.copyfile(path, alias)
    # Go decodes the alias to the same hash and reads the canonical file:
    # nothing changes.
    assert open_fs(tmp_path).head_hash == head.hash
    with FilesystemStore(tmp_path) as store:
        assert sorted(store.all_hashes()) == sorted(a.hash for a in aums)


def test_an_alias_without_its_canonical_file_fails_the_listing(tmp_path: Path) -> None:
    aums = _small_chain()
    write_fs(tmp_path, aums, aums[0].hash)
    path = aum_path(tmp_path, aums[1].hash)
    path.rename(path.with_name(_alias(path.name, 3)))
    with pytest.raises(StorageError, match="missing or misplaced"):
        open_fs(tmp_path)


def test_a_name_with_a_newline_decodes_as_go_does(tmp_path: Path) -> None:
    aums = _small_chain()
    write_fs(tmp_path, aums, aums[0].hash)
    name = hash_to_text(aums[1].hash)
    # 52 characters, one of them a newline: Go strips it and decodes 51
    # characters, which leaves the last two bytes of the hash zero. That
    # hash has no file, so Go's listing (and Open) fails.
    (tmp_path / name[:2] / (name[:51] + "\n")).write_bytes(b"")
    zero_tail = hash_to_text(aums[1].hash[:30] + bytes(2))
    with pytest.raises(StorageError, match=zero_tail):
        open_fs(tmp_path)


# -- 3. a symlinked prefix directory -------------------------------------------------------


def test_aums_behind_a_symlinked_prefix_are_read_but_not_listed(tmp_path: Path) -> None:
    aums = _small_chain()
    root = tmp_path / "chonk"
    write_fs(root, aums, aums[0].hash)
    middle = aum_path(root, aums[1].hash).parent
    assert aum_path(root, aums[2].hash).parent != middle
    # The prefix directory lives elsewhere; the store holds a symlink to it.
    middle.rename(tmp_path / "elsewhere")
    middle.symlink_to(tmp_path / "elsewhere")
    with FilesystemStore(root) as store:
        # The listing skips the symlink (Go's DirEntry.IsDir), get follows it.
        assert aums[1].hash not in store.all_hashes()
        assert store.get(aums[1].hash) == aums[1]
        a = Authority.open(store)
    # Go opens it (tka-oracle): the walk back from the listed head reads the
    # middle AUM by its path, so both heads share the genesis; walking
    # forward asks for the listed children, and the genesis has none.
    assert a.head_hash == aums[0].hash
    assert a.oldest_ancestor.hash == aums[0].hash


# -- 4. chains Go's fork choice panics on ----------------------------------------------------


def test_a_sibling_with_a_short_key_id_is_refused_naming_it() -> None:
    g = genesis(*(Key(1, i + 1, PUBS[i]) for i in range(3)))
    bad = AUM(AUMKind.NO_OP, prev_aum_hash=g.hash, signatures=(Signature(b"\x01" * 31, b""),))
    other = AUM(AUMKind.NO_OP, prev_aum_hash=g.hash, key_id=b"x")
    # Go: panic("unexpected: keyIDs are 32 bytes") in AUM.Weight.
    with pytest.raises(StorageError, match=f"aum {bad.hash_text}: signature 0: key id is 31"):
        open_memory([g, bad, other])
    # As the only child it is never weighed: Go opens the chain.
    assert open_memory([g, bad]).head_hash == bad.hash


def test_an_unknown_kind_key_before_the_signer_is_refused_in_fork_choice() -> None:
    odd = Key(7, 1, b"\x09" * 32)
    sig = (Signature(PUBS[0], b""),)
    for keys, go_panics in (((odd, Key(1, 1, PUBS[0])), True), ((Key(1, 1, PUBS[0]), odd), False)):
        g = genesis(*keys)
        a = AUM(AUMKind.NO_OP, prev_aum_hash=g.hash, signatures=sig)
        b = AUM(AUMKind.NO_OP, prev_aum_hash=g.hash, key_id=b"x")
        if go_panics:
            with pytest.raises(StorageError, match=f"aum {a.hash_text}: .*unknown kind 7"):
                open_memory([g, a, b])
        else:
            open_memory([g, a, b])


def test_an_aum_listed_twice_is_weighed_twice_on_disk(tmp_path: Path) -> None:
    g = genesis(Key(1, 1, PUBS[0]))
    bad = AUM(AUMKind.NO_OP, prev_aum_hash=g.hash, signatures=(Signature(b"\x01" * 31, b""),))
    write_fs(tmp_path, [g, bad], g.hash)
    assert open_fs(tmp_path).head_hash == bad.hash
    path = aum_path(tmp_path, bad.hash)
    shutil.copyfile(path, path.with_name(_alias(path.name, 1)))
    # Go's parent index holds the AUM once per name: two candidates, which
    # are weighed, and weighing this one panics.
    with pytest.raises(StorageError, match=bad.hash_text):
        open_fs(tmp_path)


def test_add_key_after_an_unknown_kind_key_adds_it_as_go_does() -> None:
    odd = Key(0, 1, b"\x09" * 32)
    g = genesis(Key(1, 1, PUBS[0]), odd, Key(1, 1, PUBS[1]))
    # Go's GetKey stops with an error at the unknown kind, which AddKey
    # takes for "not trusted": PUBS[1] is added a second time.
    add = AUM(AUMKind.ADD_KEY, prev_aum_hash=g.hash, key=Key(1, 1, PUBS[1]))
    keys = open_memory([g, add]).state.keys or ()
    assert [k.public for k in keys] == [PUBS[0], odd.public, PUBS[1], PUBS[1]]
    # A key found before the unknown one is still "already exists".
    dup = AUM(AUMKind.ADD_KEY, prev_aum_hash=g.hash, key=Key(1, 1, PUBS[0]))
    with pytest.raises(TKAError, match="key already exists"):
        open_memory([g, dup])


# -- 5. audit of a directory Go cannot open ---------------------------------------------------


def test_audit_of_a_directory_with_an_orphan_is_not_valid(tmp_path: Path) -> None:
    g = signed(genesis(Key(1, 1, PUBS[0])), PRIVS[0])
    orphan = signed(AUM(AUMKind.NO_OP, prev_aum_hash=b"\x07" * 32), PRIVS[0])
    write_fs(tmp_path, [g, orphan], g.hash)
    # Go's Open and Authority.open: "multiple distinct chains".
    with pytest.raises(TKAError, match="multiple distinct chains"):
        open_fs(tmp_path)
    report = audit_directory(tmp_path)
    assert report.verdict == "invalid"
    assert "cannot open" in report.reasons[0].text
    exe = Path(sys.executable).with_name("tka")
    proc = subprocess.run(
        [str(exe), "audit", str(tmp_path), "--json"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["verdict"] == "invalid"


def test_audit_says_tailscale_nodes_cannot_open_a_chain_go_panics_on(tmp_path: Path) -> None:
    g = signed(genesis(Key(1, 1, PUBS[0])), PRIVS[0])
    a = signed(AUM(AUMKind.NO_OP, prev_aum_hash=g.hash), PRIVS[0])
    a = a.with_signatures((*(a.signatures or ()), Signature(b"\x01" * 31, b"")))
    b = signed(AUM(AUMKind.NO_OP, prev_aum_hash=g.hash, key_id=b"x"), PRIVS[0])
    write_fs(tmp_path, [g, a, b], g.hash)
    report = audit_directory(tmp_path)
    assert report.verdict == "invalid"
    assert "cannot open" in report.reasons[0].text and a.hash_text in report.reasons[0].text


# -- 6. resign conformance: a signature Go produces but cannot decode --------------------------


def test_resign_check_compares_an_undecodable_new_signature() -> None:
    cred = PRIVS[1]
    g = signed(genesis(Key(1, 1, PUBS[0])), PRIVS[0])
    base = NodeKeySignature(SigKind.CREDENTIAL, key_id=PUBS[0], wrapping_pubkey=cred.public().raw)
    sig = base.with_signature(PRIVS[0].sign(base.sig_hash))
    for i in range(15):
        rot = NodeKeySignature(
            SigKind.ROTATION, pubkey=node_key_binary(bytes([i]) * 32), nested=sig
        )
        sig = rot.with_signature(cred.sign(rot.sig_hash))
    node_key = b"\x99" * 32
    new = resign_nks(cred.raw, node_key, sig.to_bytes())
    # What tka-oracle answered for this input (Go's bytes are identical).
    case = {
        "priv_text": cred.text(),
        "priv_seed_hex": cred.seed.hex(),
        "node_key_hex": node_key.hex(),
        "old_sig_hex": sig.to_bytes().hex(),
        "genesis_hex": g.to_bytes().hex(),
        "ok": True,
        "new_sig_hex": new.hex(),
        "returned_old_verbatim": False,
        "new_sig": None,
        "new_sig_decode_error": "cbor: exceeded max nested level 16",
        "authorized": False,
        "prev_node_keys_hex": [],
    }
    resign_kind.check(case, Context())
