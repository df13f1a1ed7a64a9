"""Conformance runner for Tailscale-generated test vectors (format ``tka-vectors/1``).

Each vector file holds one *kind* (``aum``, ``nks``, ...). For every kind there
is a module ``tka.conformance.<kind>`` exposing ``check(case, ctx)``, which
raises :class:`Mismatch` when tka disagrees with the recorded behaviour. A kind
with no module yet is reported with every case failed, never skipped.
"""

from __future__ import annotations

import importlib
import json
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tka.conformance._util import Context, Mismatch

__all__ = ["KINDS", "Context", "KindResult", "Mismatch", "RunResult", "load_vector_files", "run"]

#: Every kind the vector format defines, in the order the runner reports them.
KINDS: tuple[str, ...] = (
    "aum",
    "nks",
    "ed25519",
    "disablement",
    "resign",
    "authkey",
    "keys",
    "deeplink",
    "chain",
    "inform",
    "builder",
    "sync",
    "tailchonk_fs",
    "compaction",
    "lock_log_json",
)

VECTOR_FORMAT = "tka-vectors/1"


@dataclass
class KindResult:
    """Outcome of running every case of one kind."""

    kind: str
    passed: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    unsupported: bool = False


@dataclass
class RunResult:
    """Outcome of a whole conformance run."""

    kinds: list[KindResult]

    @property
    def passed(self) -> int:
        """Total number of passing cases."""
        return sum(k.passed for k in self.kinds)

    @property
    def failed(self) -> int:
        """Total number of failing cases (unsupported kinds count as failed)."""
        return sum(k.failed for k in self.kinds)


def load_vector_files(dirs: Iterable[Path]) -> dict[str, list[dict[str, Any]]]:
    """Read every ``*.json`` vector file under *dirs*, grouped by kind.

    Files that are not vector files (other formats, unreadable JSON) are
    ignored, so a folder may also hold a README or unrelated data.
    """
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in dirs:
        paths = [d] if d.is_file() else sorted(d.glob("*.json"))
        for path in paths:
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if not isinstance(doc, dict) or doc.get("format") != VECTOR_FORMAT:
                continue
            kind = doc.get("kind")
            cases = doc.get("cases")
            if not isinstance(kind, str) or not isinstance(cases, list):
                continue
            header = {k: v for k, v in doc.items() if k != "cases"}
            for case in cases:
                if isinstance(case, dict):
                    by_kind.setdefault(kind, []).append({**case, "_header": header})
    return by_kind


def _checker(kind: str) -> Callable[[dict[str, Any], Context], None] | None:
    if kind not in KINDS:
        return None
    try:
        module = importlib.import_module(f"tka.conformance.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name == f"tka.conformance.{kind}":
            return None
        raise
    check: Callable[[dict[str, Any], Context], None] = module.check
    return check


def run(
    dirs: Sequence[Path],
    kinds: Sequence[str] | None = None,
    ctx: Context | None = None,
    debug: bool = False,
) -> RunResult:
    """Run the selected *kinds* (all found when ``None``) over the vector files in *dirs*."""
    ctx = ctx or Context()
    by_kind = load_vector_files(dirs)
    selected = list(kinds) if kinds else [k for k in KINDS if k in by_kind]
    selected += [k for k in (sorted(by_kind) if not kinds else []) if k not in selected]
    results: list[KindResult] = []
    for kind in selected:
        cases = by_kind.get(kind, [])
        res = KindResult(kind)
        check = _checker(kind)
        if check is None:
            res.unsupported = True
            res.failed = len(cases)
            res.failures = [(c.get("name", "?"), "kind not supported yet") for c in cases[:1]]
            results.append(res)
            continue
        for case in cases:
            name = str(case.get("name", "?"))
            try:
                check(case, ctx)
            except Mismatch as exc:
                res.failed += 1
                res.failures.append((name, str(exc)))
            except Exception as exc:  # a crash in a checker is a failure, never a skip
                res.failed += 1
                detail = traceback.format_exc() if debug else f"{type(exc).__name__}: {exc}"
                res.failures.append((name, f"crashed: {detail}"))
            else:
                res.passed += 1
        results.append(res)
    return RunResult(results)
