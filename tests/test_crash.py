"""Crash test: writers SIGKILLed at random moments never leave a store broken.

For each on-disk backend, a writer process commits a deterministic chain of
AUMs (a no-op genesis, then no-ops each naming the previous one) in batches of
1 to 4, and writes each hash to a pipe only *after* ``commit_verified``
returned. The test kills it with SIGKILL a few milliseconds after it starts,
then reopens the store and checks that:

* every hash the writer reported is stored and decodes to the right AUM;
* the stored AUMs are exactly a prefix of the chain (nothing half-written,
  no gap: the filesystem store commits AUM by AUM in order, SQLite a batch at
  a time), and the single head is the last AUM of that prefix;
* filesystem: every AUM file passes the strict decode and hash check (the
  store's own scan), and periodically a stricter one (exactly one CBOR item);
  SQLite: ``PRAGMA integrity_check`` is ok;
* the last-active-ancestor hint, which the writer sometimes rewrites, is
  readable;
* periodically and at the end, :meth:`tka.authority.Authority.open` finds the
  head.

The same directory / database is reused across kills, so the store grows.
Writers are forked from the test process rather than started with
``sys.executable``: an interpreter start costs ~0.1 s, which would make 200
kills per backend take minutes; a forked child is still a separate process
killed mid-syscall, which is what matters here.
"""

from __future__ import annotations

import os
import random
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from tka import codec
from tka.aum import AUM, hash_from_text, hash_to_text
from tka.storage.fs import FilesystemStore, decode_entry
from tka.storage.sqlite import SQLiteStore

KILLS = 200
# Wall-clock cap per backend; the test fails if it cannot reach KILLS in time.
BUDGET_SECONDS = 40.0
# Go's Open walks at most 2000 AUMs; keep the chain below that so the
# authority check applies to the whole history.
CHAIN_LENGTH = 1900
DEEP_CHECK_EVERY = 25

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _chain(n: int) -> list[AUM]:
    out = [AUM(message_kind=3, prev_aum_hash=None)]
    while len(out) < n:
        out.append(AUM(message_kind=3, prev_aum_hash=out[-1].hash))
    return out


CHAIN = _chain(CHAIN_LENGTH)
POSITION = {a.hash: i for i, a in enumerate(CHAIN)}


def _open(kind: str, path: str) -> Any:
    return FilesystemStore(path) if kind == "fs" else SQLiteStore(path)


def _writer(kind: str, path: str, out_fd: int, start: int, seed: int) -> None:
    """Child process body: extend the chain from *start* until killed."""
    rng = random.Random(seed)
    store = _open(kind, path)
    os.write(out_fd, b"r\n")  # ready: the store is open
    n = start
    while True:
        if n >= len(CHAIN):
            time.sleep(1)  # the chain is complete: wait to be killed
            continue
        batch = CHAIN[n : n + rng.randint(1, 4)]
        os.write(out_fd, b"+\n")  # a commit starts: tells a kill inside it from one between
        store.commit_verified(batch)
        # One write per batch, under PIPE_BUF: atomic, so no torn lines.
        os.write(out_fd, b"".join(hash_to_text(a.hash).encode() + b"\n" for a in batch))
        n += len(batch)
        if rng.random() < 0.15:
            store.set_last_active_ancestor(CHAIN[0].hash)


def _run_writer_and_kill(
    kind: str, path: str, start: int, rng: random.Random, max_delay: float
) -> tuple[list[bytes], bool]:
    """Fork a writer, SIGKILL it after a random few ms.

    Returns the hashes it reported and whether it was killed inside a commit.
    """
    r, w = os.pipe()
    seed = rng.getrandbits(32)
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 3
        try:
            os.close(r)
            _writer(kind, path, w, start, seed)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    # Usually start the clock once the child has opened the store, so that
    # a slow fork or a busy machine does not turn every kill into a kill
    # during start-up; sometimes kill it during start-up on purpose.
    if rng.random() < 0.9:
        while not b"".join(chunks).startswith(b"r\n"):
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    time.sleep(rng.uniform(0.0, max_delay))
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    # Anything but our SIGKILL means the writer failed on its own.
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"writer ended by itself (status {status:#x}); see its traceback above"
    )
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    # Only complete lines count (the last element is empty or partial).
    lines = [x for x in b"".join(chunks).split(b"\n")[:-1] if x != b"r"]
    in_commit = bool(lines) and lines[-1] == b"+"
    return [hash_from_text(line.decode()) for line in lines if line != b"+"], in_commit


def _deep_check_fs_files(root: Path) -> int:
    """Strictest reading of every AUM file; returns how many temporary files lie around."""
    temps = 0
    for d in root.iterdir():
        if not d.is_dir():
            continue
        for f in d.iterdir():
            if f.name.startswith(".tka-tmp-"):
                temps += 1
                continue
            h = hash_from_text(f.name)
            data = f.read_bytes()
            codec.parse(data)  # exactly one well-formed item, nothing trailing
            aum, created, purged = decode_entry(data)
            assert aum is not None and aum.hash == h and created > 0 and purged == 0
    return temps


def _authority_head(store: Any) -> bytes | None:
    try:
        from tka.authority import Authority
    except ImportError:
        return None
    head: bytes = Authority.open(store).head.hash
    return head


def _verify(
    kind: str, path: str, reported: set[bytes], new: list[bytes], deep: bool, view: Any = None
) -> int:
    """Check the store; return the number of stored AUMs.

    A deep check, or one without *view*, opens the store afresh, so every
    file is decoded again. *view* is a store kept open across kills: it must
    notice the writers' changes by itself, rereading every file but decoding
    only those whose bytes changed.
    """
    store = _open(kind, path) if deep or view is None else view
    try:
        stored = store.all_hashes()
        n = len(stored)
        assert set(stored) == {a.hash for a in CHAIN[:n]}, "stored AUMs are not a chain prefix"
        missing = reported - set(stored)
        assert not missing, f"{len(missing)} reported AUMs lost"
        assert [h.hash for h in store.heads()] == ([CHAIN[n - 1].hash] if n else [])
        # Decoding every AUM again at each kill would dominate the run time:
        # those reported since the last check, and all of them when deep.
        for h in reported if deep else new:
            got = store.get(h)
            assert got is not None and got.to_bytes() == CHAIN[POSITION[h]].to_bytes()
        assert store.last_active_ancestor() in (None, CHAIN[0].hash)
        if kind == "sqlite":
            assert store.integrity_check() == ["ok"]
        if deep:
            if kind == "fs":
                _deep_check_fs_files(Path(path))
            if n:
                head = _authority_head(store)
                assert head is None or head == CHAIN[n - 1].hash
        return n
    finally:
        if store is not view:
            store.close()


@pytest.mark.parametrize("kind", ["fs", "sqlite"])
def test_sigkilled_writers_never_break_the_store(
    kind: str, tmp_path: Path, record_property: Any
) -> None:
    def location(i: int) -> str:
        return str(tmp_path / (f"chonk{i}" if kind == "fs" else f"tka{i}.db"))

    stores_used = 1
    path = location(stores_used)
    _open(kind, path).close()
    # SQLite connections must not cross a fork; a filesystem store may, and
    # keeping one open tests its refresh after other processes' commits.
    view = FilesystemStore(path) if kind == "fs" else None
    rng = random.Random(f"crash-{kind}")
    # Filesystem commits cost two fsyncs per AUM, SQLite one per batch: give
    # the slower writer more time so most kills land inside a commit.
    max_delay = 0.020 if kind == "fs" else 0.006
    reported: set[bytes] = set()
    kills = in_commit = verified = 0
    stored = 0
    started = time.monotonic()
    while kills < KILLS:
        assert time.monotonic() - started < BUDGET_SECONDS, f"only {kills} kills in budget"
        got, mid_commit = _run_writer_and_kill(kind, path, stored, rng, max_delay)
        reported.update(got)
        kills += 1
        in_commit += mid_commit
        stored = _verify(kind, path, reported, got, kills % DEEP_CHECK_EVERY == 0, view)
        if stored > CHAIN_LENGTH - 100:
            # Near the end of the chain a writer would soon have nothing to
            # do: check this store fully and carry on in a new one.
            _verify(kind, path, reported, [], deep=True)
            verified += len(reported)
            reported = set()
            stores_used += 1
            path = location(stores_used)
            view = FilesystemStore(path) if kind == "fs" else None
            stored = 0
    stored = _verify(kind, path, reported, [], deep=True)
    verified += len(reported)
    elapsed = time.monotonic() - started
    temps = _deep_check_fs_files(Path(path)) if kind == "fs" else 0

    try:
        import tka.authority  # noqa: F401

        authority_note = "authority opened at the head"
    except ImportError:
        authority_note = "authority check skipped: tka.authority not importable"
    summary = (
        f"crash[{kind}]: {kills} kills ({in_commit} inside a commit), "
        f"{verified} reported AUMs verified, {stored} stored in the last of {stores_used} "
        f"stores, {temps} leftover temp files, {elapsed:.1f}s; {authority_note}"
    )
    print(summary)
    record_property("kills", kills)
    record_property("kills_inside_commit", in_commit)
    record_property("reported_verified", verified)
    record_property("stored", stored)
    record_property("seconds", round(elapsed, 2))
    # The kills must mostly have landed while commits were under way.
    assert in_commit > KILLS // 4
