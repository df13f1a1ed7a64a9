"""Storage backends: one behavioural suite over memory, filesystem and SQLite, then per-backend.

The shared tests pin what the :class:`~tka.storage.Storage` protocol promises
and every backend must do alike. Deliberate differences are tested per
backend and named as such (re-committing an AUM: the filesystem store keeps
Tailscale's CreatedUnix, the others re-stamp).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import random
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tka import codec
from tka.aum import AUM, hash_to_text
from tka.errors import StorageError
from tka.storage import CompactableStorage
from tka.storage.fs import FilesystemStore, decode_entry, encode_entry
from tka.storage.memory import MemoryStore
from tka.storage.sqlite import APPLICATION_ID, SCHEMA_VERSION, SQLiteStore

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
BACKENDS = ["memory", "fs", "sqlite"]
DISK_BACKENDS = ["fs", "sqlite"]


class FakeClock:
    """A settable clock, in whole seconds so every backend records the same value."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def genesis() -> AUM:
    return AUM(message_kind=3, prev_aum_hash=None)


def noop(parent: AUM | bytes, tag: str | None = None) -> AUM:
    """A no-op AUM under *parent*; *tag* makes siblings differ (forks)."""
    h = parent if isinstance(parent, bytes) else parent.hash
    return AUM(message_kind=3, prev_aum_hash=h, meta={"fork": tag} if tag else None)


def chain(n: int, start: AUM | None = None, tag: str | None = None) -> list[AUM]:
    """*n* AUMs: a genesis (unless *start* is given) and no-ops, each the parent of the next."""
    out: list[AUM] = []
    prev = start
    for i in range(n):
        a = genesis() if prev is None else noop(prev, tag if i == 0 else None)
        out.append(a)
        prev = a
    return out


def hashes(aums: list[AUM]) -> set[bytes]:
    return {a.hash for a in aums}


StoreFactory = Callable[..., Any]


def _factory(kind: str, root: Path) -> StoreFactory:
    def make(clock: FakeClock | None = None, name: str = "store") -> Any:
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        if kind == "memory":
            return MemoryStore(**kwargs)
        if kind == "fs":
            return FilesystemStore(root / name, **kwargs)
        return SQLiteStore(root / f"{name}.db", **kwargs)

    return make


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes stores of one backend; the same *name* reopens the same files."""
    made: list[Any] = []
    base = _factory(str(request.param), tmp_path)

    def make(clock: FakeClock | None = None, name: str = "store") -> Any:
        store = base(clock, name)
        made.append(store)
        return store

    yield make
    for s in made:
        with contextlib.suppress(Exception):
            s.close()


@pytest.fixture(params=DISK_BACKENDS)
def make_disk_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """As make_store, for the backends that persist."""
    made: list[Any] = []
    base = _factory(str(request.param), tmp_path)

    def make(clock: FakeClock | None = None, name: str = "store") -> Any:
        store = base(clock, name)
        made.append(store)
        return store

    yield make
    for s in made:
        with contextlib.suppress(Exception):
            s.close()


# -- shared behaviour ------------------------------------------------------


def test_every_backend_is_a_compactable_storage(make_store: StoreFactory) -> None:
    assert isinstance(make_store(), CompactableStorage)


def test_empty_store(make_store: StoreFactory) -> None:
    s = make_store()
    g = genesis()
    assert s.get(g.hash) is None
    assert s.children(g.hash) == []
    assert s.heads() == []
    assert s.all_hashes() == []
    assert s.commit_time(g.hash) is None
    assert s.last_active_ancestor() is None


def test_chain_get_children_heads(make_store: StoreFactory) -> None:
    s = make_store()
    aums = chain(5)
    s.commit_verified(aums)
    for a in aums:
        got = s.get(a.hash)
        assert got is not None
        assert got.to_bytes() == a.to_bytes() and got.hash == a.hash
    for parent, child in itertools.pairwise(aums):
        assert [c.hash for c in s.children(parent.hash)] == [child.hash]
    assert s.children(aums[-1].hash) == []
    assert [h.hash for h in s.heads()] == [aums[-1].hash]
    assert set(s.all_hashes()) == hashes(aums)
    assert len(s.all_hashes()) == len(aums)


def test_forks_give_several_heads_and_children(make_store: StoreFactory) -> None:
    s = make_store()
    trunk = chain(3)
    left = chain(2, start=trunk[-1], tag="left")
    right = chain(3, start=trunk[-1], tag="right")
    s.commit_verified(trunk)
    s.commit_verified(left)
    s.commit_verified(right)
    assert hashes(s.heads()) == {left[-1].hash, right[-1].hash}
    assert hashes(s.children(trunk[-1].hash)) == {left[0].hash, right[0].hash}
    assert set(s.all_hashes()) == hashes(trunk + left + right)


def test_aums_committed_one_by_one_or_in_separate_batches_are_equivalent(
    make_store: StoreFactory,
) -> None:
    aums = chain(6)
    one, two = make_store(name="a"), make_store(name="b")
    for a in aums:
        one.commit_verified([a])
    two.commit_verified(aums[:2])
    two.commit_verified(aums[2:])
    for s in (one, two):
        assert set(s.all_hashes()) == hashes(aums)
        assert hashes(s.heads()) == {aums[-1].hash}


def test_commit_is_idempotent(make_store: StoreFactory) -> None:
    s = make_store()
    aums = chain(4)
    s.commit_verified(aums)
    s.commit_verified(aums)
    s.commit_verified([aums[1], aums[1]])
    assert len(s.all_hashes()) == 4
    assert set(s.all_hashes()) == hashes(aums)
    assert [c.hash for c in s.children(aums[0].hash)] == [aums[1].hash]
    assert [h.hash for h in s.heads()] == [aums[-1].hash]


def test_empty_commit_and_purge_do_nothing(make_store: StoreFactory) -> None:
    s = make_store()
    s.commit_verified([])
    s.purge([])
    assert s.all_hashes() == []


def test_commit_time_is_the_clock_at_first_commit(make_store: StoreFactory) -> None:
    clock = FakeClock(1_000_000.0)
    s = make_store(clock)
    a, b = chain(2)
    s.commit_verified([a])
    clock.now = 1_000_100.0
    s.commit_verified([b])
    assert s.commit_time(a.hash) == 1_000_000.0
    assert s.commit_time(b.hash) == 1_000_100.0
    assert s.commit_time(noop(b).hash) is None


def test_last_active_ancestor_round_trips_and_is_overwritten(make_store: StoreFactory) -> None:
    s = make_store()
    a, b = chain(2)
    s.set_last_active_ancestor(a.hash)
    assert s.last_active_ancestor() == a.hash
    s.set_last_active_ancestor(b.hash)
    assert s.last_active_ancestor() == b.hash


def test_purge_forgets_aums(make_store: StoreFactory) -> None:
    s = make_store()
    aums = chain(4)
    s.commit_verified(aums)
    s.purge([aums[3].hash])
    assert s.get(aums[3].hash) is None
    assert s.commit_time(aums[3].hash) is None
    assert aums[3].hash not in s.all_hashes()
    # Its parent has no stored child left, so it is a head again.
    assert [h.hash for h in s.heads()] == [aums[2].hash]
    assert s.children(aums[2].hash) == []


def test_children_of_a_purged_aum_are_still_found(make_store: StoreFactory) -> None:
    s = make_store()
    aums = chain(4)
    s.commit_verified(aums)
    s.purge([aums[0].hash, aums[1].hash])
    assert set(s.all_hashes()) == hashes(aums[2:])
    assert [c.hash for c in s.children(aums[1].hash)] == [aums[2].hash]
    assert [h.hash for h in s.heads()] == [aums[3].hash]


def test_purge_ignores_unknown_and_already_purged_hashes(make_store: StoreFactory) -> None:
    s = make_store()
    aums = chain(3)
    s.commit_verified(aums)
    s.purge([aums[2].hash])
    s.purge([aums[2].hash, noop(aums[2]).hash, b"\x01" * 32])
    assert set(s.all_hashes()) == hashes(aums[:2])


def test_a_purged_aum_can_be_committed_again(make_store: StoreFactory) -> None:
    s = make_store()
    aums = chain(3)
    s.commit_verified(aums)
    s.purge([aums[2].hash])
    s.commit_verified([aums[2]])
    got = s.get(aums[2].hash)
    assert got is not None and got.hash == aums[2].hash
    assert s.commit_time(aums[2].hash) is not None
    assert set(s.all_hashes()) == hashes(aums)
    assert [h.hash for h in s.heads()] == [aums[2].hash]
    assert [c.hash for c in s.children(aums[1].hash)] == [aums[2].hash]


def test_backends_agree_on_random_histories(tmp_path: Path) -> None:
    """The same random sequence of operations leaves every backend answering alike."""
    rng = random.Random(7)
    clock = FakeClock(5_000.0)
    stores = [_factory(kind, tmp_path)(clock) for kind in BACKENDS]
    known: list[AUM] = [genesis()]
    committed_once: dict[bytes, int] = {}
    try:
        for step in range(120):
            clock.now += 1
            op = rng.random()
            if op < 0.6:
                parent = rng.choice(known)
                batch = chain(rng.randint(1, 3), start=parent, tag=f"s{step}")
                if rng.random() < 0.2:
                    batch.insert(0, rng.choice(known))  # sometimes re-commit a known one
                known.extend(batch)
                for s in stores:
                    s.commit_verified(batch)
                for a in batch:
                    committed_once[a.hash] = committed_once.get(a.hash, 0) + 1
            elif op < 0.8:
                victims = [rng.choice(known).hash for _ in range(rng.randint(1, 3))]
                for s in stores:
                    s.purge(victims)
            else:
                h = rng.choice(known).hash
                for s in stores:
                    s.set_last_active_ancestor(h)
            # Fresh stores too, so on-disk state is compared and not only caches.
            views = [*stores, _factory("fs", tmp_path)(clock), _factory("sqlite", tmp_path)(clock)]
            ref = views[0]
            for v in views[1:]:
                assert sorted(v.all_hashes()) == sorted(ref.all_hashes())
                assert sorted(a.hash for a in v.heads()) == sorted(a.hash for a in ref.heads())
                assert v.last_active_ancestor() == ref.last_active_ancestor()
                for a in rng.sample(known, min(5, len(known))):
                    assert (v.get(a.hash) is None) == (ref.get(a.hash) is None)
                    assert sorted(c.hash for c in v.children(a.hash)) == sorted(
                        c.hash for c in ref.children(a.hash)
                    )
                    if committed_once.get(a.hash) == 1:
                        assert v.commit_time(a.hash) == ref.commit_time(a.hash)
            for v in views[3:]:
                v.close()
    finally:
        for s in stores:
            if hasattr(s, "close"):
                s.close()


# -- persistence and sharing (filesystem and SQLite) ------------------------


def test_everything_survives_reopening(make_disk_store: StoreFactory) -> None:
    clock = FakeClock(2_000.0)
    s = make_disk_store(clock)
    trunk = chain(4)
    fork = chain(2, start=trunk[1], tag="f")
    s.commit_verified(trunk + fork)
    s.purge([trunk[3].hash])
    s.set_last_active_ancestor(trunk[1].hash)
    s.close()

    r = make_disk_store(FakeClock(9_999.0))
    assert set(r.all_hashes()) == hashes(trunk[:3] + fork)
    assert hashes(r.heads()) == {trunk[2].hash, fork[-1].hash}
    assert r.last_active_ancestor() == trunk[1].hash
    assert r.commit_time(trunk[0].hash) == 2_000.0
    assert r.get(trunk[3].hash) is None
    got = r.get(fork[0].hash)
    assert got is not None and got.to_bytes() == fork[0].to_bytes()


def test_two_store_objects_on_one_location_see_each_other(make_disk_store: StoreFactory) -> None:
    a = make_disk_store()
    b = make_disk_store()
    aums = chain(3)
    a.commit_verified(aums[:2])
    assert set(b.all_hashes()) == hashes(aums[:2])  # b caches its scan now
    a.commit_verified(aums[2:])
    assert [h.hash for h in b.heads()] == [aums[2].hash]
    assert b.get(aums[2].hash) is not None
    b.purge([aums[2].hash])
    assert a.get(aums[2].hash) is None
    assert [h.hash for h in a.heads()] == [aums[1].hash]
    b.set_last_active_ancestor(aums[0].hash)
    assert a.last_active_ancestor() == aums[0].hash


def _commit_chain_in_child(kind: str, path: str, tag: str, n: int, root_hex: str) -> None:
    """Child process body: extend the shared genesis with its own chain, one commit per AUM."""
    store: Any = FilesystemStore(path) if kind == "fs" else SQLiteStore(path)
    prev = AUM.from_bytes(bytes.fromhex(root_hex))
    for a in chain(n, start=prev, tag=tag):
        store.commit_verified([a])
        # Reads interleaved with the other process's writes.
        assert store.get(a.hash) is not None
        store.heads()
    store.close()


@pytest.mark.parametrize("kind", DISK_BACKENDS)
def test_concurrent_commits_from_two_processes_lose_nothing(kind: str, tmp_path: Path) -> None:
    path = str(tmp_path / ("chonk" if kind == "fs" else "tka.db"))
    g = genesis()
    store: Any = FilesystemStore(path) if kind == "fs" else SQLiteStore(path)
    store.commit_verified([g])
    store.heads()  # warm the cache: it must notice the children's commits
    ctx = multiprocessing.get_context("spawn")
    n = 40
    procs = [
        ctx.Process(target=_commit_chain_in_child, args=(kind, path, tag, n, g.to_bytes().hex()))
        for tag in ("p1", "p2")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    want = {g.hash} | hashes(chain(n, start=g, tag="p1")) | hashes(chain(n, start=g, tag="p2"))
    assert set(store.all_hashes()) == want
    assert len(store.heads()) == 2
    store.close()
    fresh: Any = FilesystemStore(path) if kind == "fs" else SQLiteStore(path)
    assert set(fresh.all_hashes()) == want
    fresh.close()


# -- filesystem store ---------------------------------------------------------


def _aum_file(root: Path, h: bytes) -> Path:
    name = hash_to_text(h)
    return root / name[:2] / name


def test_fs_layout_and_file_contents_are_tailscales(tmp_path: Path) -> None:
    root = tmp_path / "chonk"
    clock = FakeClock(1_234_567.0)
    s = FilesystemStore(root, clock=clock)
    aums = chain(3)
    s.commit_verified(aums)
    umask = os.umask(0)
    os.umask(umask)
    for a in aums:
        path = _aum_file(root, a.hash)
        data = path.read_bytes()
        # Canonical CBOR of {2: aum map, 3: CreatedUnix}: no key 1, no key 4.
        assert data == codec.encode({2: a.to_cbor_obj(), 3: 1_234_567})
        assert data == encode_entry(a, 1_234_567)
        tree = codec.parse(data)  # strict: one item, nothing trailing
        assert [k for k, _ in tree.pairs] == [2, 3]
        got, created, purged = decode_entry(data)
        assert got is not None and got.hash == a.hash
        assert (created, purged) == (1_234_567, 0)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755 & ~umask
    s.set_last_active_ancestor(aums[0].hash)
    laa = root / "last_active_ancestor"
    assert laa.read_bytes() == aums[0].hash
    assert stat.S_IMODE(laa.stat().st_mode) == 0o644
    # Only AUM files, the hint and the lock file: no temporary file left behind.
    names = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    want = {f"{hash_to_text(a.hash)[:2]}/{hash_to_text(a.hash)}" for a in aums}
    assert names == want | {"last_active_ancestor", ".tka-lock"}


def test_fs_purge_keeps_the_file_with_purged_unix(tmp_path: Path) -> None:
    root = tmp_path / "chonk"
    clock = FakeClock(100.0)
    s = FilesystemStore(root, clock=clock)
    aums = chain(2)
    s.commit_verified(aums)
    clock.now = 200.0
    s.purge([aums[1].hash])
    data = _aum_file(root, aums[1].hash).read_bytes()
    assert data == codec.encode({2: aums[1].to_cbor_obj(), 3: 100, 4: 200})
    # Committed again: PurgedUnix cleared, CreatedUnix kept (Tailscale's rule).
    clock.now = 300.0
    s.commit_verified([aums[1]])
    assert _aum_file(root, aums[1].hash).read_bytes() == encode_entry(aums[1], 100)
    assert s.commit_time(aums[1].hash) == 100.0


def test_fs_recommit_keeps_created_unix_where_memory_restamps(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    fs = FilesystemStore(tmp_path / "chonk", clock=clock)
    mem = MemoryStore(clock=clock)
    sq = SQLiteStore(tmp_path / "t.db", clock=clock)
    a = genesis()
    for s in (fs, mem, sq):
        s.commit_verified([a])
    clock.now = 500.0
    for s in (fs, mem, sq):
        s.commit_verified([a])
    assert fs.commit_time(a.hash) == 100.0
    assert mem.commit_time(a.hash) == 500.0
    assert sq.commit_time(a.hash) == 500.0
    sq.close()


def test_fs_refuses_an_entry_that_does_not_hash_to_its_name(tmp_path: Path) -> None:
    root = tmp_path / "chonk"
    s = FilesystemStore(root)
    a, b = chain(2)
    s.commit_verified([a, b])
    _aum_file(root, a.hash).write_bytes(_aum_file(root, b.hash).read_bytes())
    fresh = FilesystemStore(root)
    with pytest.raises(StorageError, match="does not match file name"):
        fresh.all_hashes()
    with pytest.raises(StorageError, match="does not match file name"):
        fresh.get(a.hash)
    with pytest.raises(StorageError):
        fresh.heads()


def test_fs_refuses_a_truncated_entry(tmp_path: Path) -> None:
    root = tmp_path / "chonk"
    s = FilesystemStore(root)
    (a,) = chain(1)
    s.commit_verified([a])
    path = _aum_file(root, a.hash)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(StorageError, match="cbor"):
        FilesystemStore(root).all_hashes()


def test_fs_ignores_names_that_are_not_hashes(tmp_path: Path) -> None:
    root = tmp_path / "chonk"
    s = FilesystemStore(root)
    aums = chain(2)
    s.commit_verified(aums)
    name = hash_to_text(aums[0].hash)
    d = root / name[:2]
    junk = {
        d / f"{name}.tmp123": b"partial",
        d / ".DS_Store": b"junk",
        d / name.lower(): b"junk",
        d / (name[:-2] + "=="): b"junk",  # padded spelling: not a hash name for Go
        root / "AB" / "not-a-hash": b"junk",
        root / "notadir": b"x",
    }
    for path, data in junk.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    fresh = FilesystemStore(root)
    assert set(fresh.all_hashes()) == hashes(aums)
    assert [h.hash for h in fresh.heads()] == [aums[1].hash]


def test_fs_reads_a_hash_name_from_its_canonical_place_as_go_does(tmp_path: Path) -> None:
    root = tmp_path / "chonk"
    s = FilesystemStore(root)
    (a,) = chain(1)
    s.commit_verified([a])
    name = hash_to_text(a.hash)
    # The last character carries one significant bit; flipping a low bit
    # spells the same hash non-canonically.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    other = name[:-1] + alphabet[alphabet.index(name[-1]) ^ 1]
    assert other != name
    (root / "ZZ").mkdir()
    (root / "ZZ" / other).write_bytes(b"ignored: Go reads the canonical file")
    assert FilesystemStore(root).all_hashes() == [a.hash]
    # Moved out of its prefix directory, the entry is missing where Go looks.
    _aum_file(root, a.hash).rename(root / "ZZ" / name)
    with pytest.raises(StorageError, match="misplaced"):
        FilesystemStore(root).all_hashes()


def test_fs_reads_only_the_first_cbor_item(tmp_path: Path) -> None:
    root = tmp_path / "chonk"
    s = FilesystemStore(root)
    aums = chain(2)
    s.commit_verified(aums)
    p0, p1 = _aum_file(root, aums[0].hash), _aum_file(root, aums[1].hash)
    p0.write_bytes(p0.read_bytes() + b"\xff\xff\x1f")  # garbage, not even CBOR
    p1.write_bytes(p1.read_bytes() + codec.encode({4: 1}))  # a second item: not applied
    fresh = FilesystemStore(root)
    assert set(fresh.all_hashes()) == hashes(aums)
    with pytest.raises(Exception):  # noqa: B017 - the strict single-item parser refuses it
        codec.parse(p0.read_bytes())


def test_fs_reads_legacy_entries(tmp_path: Path) -> None:
    """Key 1 (retired children list) is ignored; without CreatedUnix, the mtime is used."""
    root = tmp_path / "chonk"
    a, b = chain(2)
    for aum, kids in ((a, [b.hash]), (b, [])):
        path = _aum_file(root, aum.hash)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(codec.encode({1: kids, 2: aum.to_cbor_obj()}))
    os.utime(_aum_file(root, a.hash), (1_500_000_000, 1_500_000_000))
    s = FilesystemStore(root)
    assert set(s.all_hashes()) == {a.hash, b.hash}
    assert s.commit_time(a.hash) == 1_500_000_000.0
    # Purging rewrites the entry as Tailscale does: key 1 dropped, no CreatedUnix.
    s.purge([b.hash])
    data = _aum_file(root, b.hash).read_bytes()
    assert [k for k, _ in codec.parse(data).pairs] == [2, 4]
    _, created, purged = decode_entry(data)
    assert created == 0 and purged > 0
    assert data == encode_entry(b, 0, purged)


def test_fs_entry_without_aum_is_ignored_and_commit_fills_it(tmp_path: Path) -> None:
    root = tmp_path / "chonk"
    (a,) = chain(1)
    path = _aum_file(root, a.hash)
    path.parent.mkdir(parents=True)
    path.write_bytes(codec.encode({3: 42}))
    s = FilesystemStore(root, clock=FakeClock(99.0))
    assert s.all_hashes() == [] and s.get(a.hash) is None
    s.commit_verified([a])
    assert s.commit_time(a.hash) == 42.0  # Go keeps the existing entry's CreatedUnix
    assert FilesystemStore(root).all_hashes() == [a.hash]


def test_fs_strict_decoding_of_the_entry_fields(tmp_path: Path) -> None:
    root = tmp_path / "chonk"
    (a,) = chain(1)
    path = _aum_file(root, a.hash)
    path.parent.mkdir(parents=True)
    bad = [
        codec.encode({2: a.to_cbor_obj(), 3: "soon"}),  # text into int64
        codec.encode({2: a.to_cbor_obj(), 3: 1 << 63}),  # int64 overflow
        codec.encode({2: a.to_bytes()}),  # the AUM as a byte string
        codec.encode([2, a.to_cbor_obj()]),  # not a map
        b"\xa2\x02" + a.to_bytes() + b"\x02" + a.to_bytes(),  # duplicate key 2
        b"",  # empty file
    ]
    for data in bad:
        path.write_bytes(data)
        with pytest.raises(StorageError):
            FilesystemStore(root).all_hashes()
    # Null AUM: an entry without AUM. Text key "2" names field 2, as in Go.
    path.write_bytes(codec.encode({2: None, 3: 5}))
    assert FilesystemStore(root).all_hashes() == []
    path.write_bytes(codec.encode({"2": a.to_cbor_obj(), 3: -5}))
    assert FilesystemStore(root).all_hashes() == [a.hash]


def test_fs_last_active_ancestor_of_the_wrong_length_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "chonk"
    s = FilesystemStore(root)
    (root / "last_active_ancestor").write_bytes(b"\x00" * 31)
    with pytest.raises(StorageError, match="wrong length"):
        s.last_active_ancestor()


def test_fs_leftover_temporary_files_are_invisible_and_cleaned(tmp_path: Path) -> None:
    root = tmp_path / "chonk"
    s = FilesystemStore(root)
    a, b = chain(2)
    s.commit_verified([a])
    name = hash_to_text(b.hash)
    # What a writer killed before its rename leaves: a partial file under a
    # temporary name next to where the AUM would go.
    (root / name[:2]).mkdir(exist_ok=True)
    leftover = root / name[:2] / f".tka-tmp-{name}-deadbeef0000"
    leftover.write_bytes(encode_entry(b, 1)[:10])
    fresh = FilesystemStore(root)
    assert fresh.all_hashes() == [a.hash]
    fresh.commit_verified([b])
    assert not leftover.exists()
    assert set(FilesystemStore(root).all_hashes()) == {a.hash, b.hash}


def test_fs_a_failed_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "chonk"
    s = FilesystemStore(root)
    a, b = chain(2)
    s.commit_verified([a])

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StorageError, match="No space left"):
        s.commit_verified([b])
    monkeypatch.undo()
    assert [p.name for p in root.rglob(".tka-tmp-*")] == []
    assert FilesystemStore(root).all_hashes() == [a.hash]
    assert s.all_hashes() == [a.hash]


def test_fs_readers_never_see_a_partial_aum(tmp_path: Path) -> None:
    root = tmp_path / "chonk"
    writer = FilesystemStore(root)
    aums = chain(120)
    position = {a.hash: i for i, a in enumerate(aums)}
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                r = FilesystemStore(root)
                # Each answer is a prefix of the chain; the writer may move
                # on between two calls, never backwards.
                heads = [h.hash for h in r.heads()]
                got = set(r.all_hashes())
                assert got == hashes(aums[: len(got)])
                assert len(heads) <= 1
                if heads:
                    assert position[heads[0]] < len(got)
                r.close()
            except BaseException as exc:
                errors.append(exc)
                return

    t = threading.Thread(target=read)
    t.start()
    try:
        for i in range(0, len(aums), 3):
            writer.commit_verified(aums[i : i + 3])
    finally:
        stop.set()
        t.join()
    assert not errors, errors[0]


def test_fs_decodes_each_file_once_and_refreshes_after_foreign_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tka.storage.fs as fs_module

    root = tmp_path / "chonk"
    aums = chain(300)
    FilesystemStore(root).commit_verified(aums)
    calls = 0
    real = fs_module._decode_canonical_entry

    def counting(data: bytes) -> Any:
        nonlocal calls
        calls += 1
        return real(data)

    monkeypatch.setattr(fs_module, "_decode_canonical_entry", counting)
    s = FilesystemStore(root)
    assert [h.hash for h in s.heads()] == [aums[-1].hash]
    for a in aums:
        assert s.get(a.hash) is not None
        s.children(a.hash)
        s.commit_time(a.hash)
    assert calls == len(aums)
    # Another store (as another process would) commits: s notices and
    # decodes only the new file.
    extra = noop(aums[-1])
    FilesystemStore(root).commit_verified([extra])
    assert [h.hash for h in s.heads()] == [extra.hash]
    assert calls == len(aums) + 1  # only the new file (the writer knew what it wrote)


def test_fs_store_over_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"x")
    with pytest.raises(StorageError):
        FilesystemStore(f)


@pytest.mark.skipif(not (VECTORS / "tailchonk_fs.json").exists(), reason="no vectors")
def test_fs_tailscale_directories_vectors() -> None:
    from tka.conformance import run

    (res,) = run([VECTORS], ["tailchonk_fs"]).kinds
    assert res.passed == 14 and res.failed == 0, res.failures[:3]


# -- SQLite store -------------------------------------------------------------


def test_sqlite_refuses_a_foreign_sqlite_database_without_touching_it(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="not a tka database"):
        SQLiteStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_sqlite_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database, just some bytes" * 50)
    with pytest.raises(StorageError, match="sqlite store"):
        SQLiteStore(path)


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "tka.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        SQLiteStore(path)


def test_sqlite_marks_and_configures_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tka.db"
    s = SQLiteStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    # synchronous is per connection: look at the store's own (2 = FULL).
    assert s._db().execute("PRAGMA synchronous").fetchone()[0] == 2
    assert s.integrity_check() == ["ok"]
    s.close()


def test_sqlite_finishes_an_interrupted_initialisation(tmp_path: Path) -> None:
    path = tmp_path / "tka.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.commit()
    conn.close()
    with SQLiteStore(path) as s:
        s.commit_verified(chain(2))
        assert len(s.all_hashes()) == 2


def test_sqlite_commits_a_batch_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tka.db"
    s = SQLiteStore(path)
    aums = chain(3)
    s.commit_verified(aums[:1])
    # Make the insert of the last AUM of the next batch fail inside the transaction.
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON aums WHEN NEW.hash = "
        f"x'{aums[2].hash.hex()}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="refused"):
        s.commit_verified(aums[1:])
    assert s.all_hashes() == [aums[0].hash]
    assert s.get(aums[1].hash) is None


def test_sqlite_refuses_corrupted_rows(tmp_path: Path) -> None:
    path = tmp_path / "tka.db"
    s = SQLiteStore(path)
    a, b = chain(2)
    s.commit_verified([a, b])
    conn = sqlite3.connect(path)
    conn.execute("UPDATE aums SET aum = ? WHERE hash = ?", (b.to_bytes(), a.hash))
    conn.commit()
    conn.close()
    fresh = SQLiteStore(path)
    with pytest.raises(StorageError, match="hashes to"):
        fresh.get(a.hash)
    fresh.close()
    s.close()


def test_sqlite_close_and_context_manager(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "tka.db") as s:
        s.commit_verified(chain(1))
    with pytest.raises(StorageError, match="after close"):
        s.all_hashes()
    s.close()  # closing twice is harmless


def test_sqlite_store_is_usable_from_several_threads(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "tka.db")
    g = genesis()
    s.commit_verified([g])
    errors: list[BaseException] = []

    def work(tag: str) -> None:
        try:
            for a in chain(30, start=g, tag=tag):
                s.commit_verified([a])
                assert s.get(a.hash) is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(s.all_hashes()) == 1 + 4 * 30
    assert len(s.heads()) == 4
    s.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not apply to root")
def test_fs_a_read_only_directory_can_be_read(tmp_path: Path) -> None:
    root = tmp_path / "chonk"
    s = FilesystemStore(root)
    aums = chain(2)
    s.commit_verified(aums)
    s.close()
    dirs = [root, *(p for p in root.iterdir() if p.is_dir())]
    for d in dirs:
        d.chmod(0o555)
    (root / ".tka-lock").chmod(0o444)
    try:
        r = FilesystemStore(root)
        assert set(r.all_hashes()) == hashes(aums)
        with pytest.raises(StorageError):
            r.commit_verified([noop(aums[-1])])
        r.close()
    finally:
        for d in dirs:
            d.chmod(0o755)


def test_fs_a_lock_file_that_cannot_be_written_still_allows_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the test above, for runs as root: refuse write access to the lock file."""
    root = tmp_path / "chonk"
    s = FilesystemStore(root)
    aums = chain(2)
    s.commit_verified(aums)
    s.close()
    real_open = os.open

    def no_write(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith(".tka-lock") and flags & (os.O_RDWR | os.O_WRONLY):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_write)
    r = FilesystemStore(root)
    assert set(r.all_hashes()) == hashes(aums)
    with pytest.raises(StorageError, match="Permission denied"):
        r.commit_verified([noop(aums[-1])])
    r.close()


def test_fs_snapshot_answers_one_walk_from_one_listing(tmp_path: Path) -> None:
    """A chain walk reads one state of the directory; another process's commit shows next time."""
    from tka.chain import compute_active_chain

    root = tmp_path / "chonk"
    aums = chain(20)
    writer = FilesystemStore(root)
    writer.commit_verified(aums)
    reader = FilesystemStore(root)
    view = reader.snapshot()
    assert [a.hash for a in view.heads()] == [aums[-1].hash]
    extra = noop(aums[-1])
    writer.commit_verified([extra])  # another store object, as another process
    # The view still answers from the listing it was taken from...
    assert [a.hash for a in view.heads()] == [aums[-1].hash]
    assert view.children(aums[-1].hash) == []
    # ...except that an AUM it did not list is read from disk, as get() does.
    assert view.get(extra.hash) == extra
    # The store itself, and the next walk, see the new head.
    assert [a.hash for a in reader.heads()] == [extra.hash]
    assert compute_active_chain(reader, aums[0].hash).head.hash == extra.hash
    for a in aums:
        assert view.get(a.hash) == reader.get(a.hash) == a
