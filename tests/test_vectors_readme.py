"""The copied vectors README is read inside the repository: it names no path outside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_relative_path_in_the_vectors_readme_stays_inside_the_repository() -> None:
    readme = ROOT / "vectors" / "README.md"
    text = readme.read_text(encoding="utf-8")
    paths = re.findall(r"`(\.\.?/[^`\s]*)`", text)
    for rel in paths:
        target = (readme.parent / rel).resolve()
        assert target.is_relative_to(ROOT), f"{rel} points outside the repository"
        assert target.exists(), f"{rel} names nothing in the repository"
    assert "shared/" not in text
