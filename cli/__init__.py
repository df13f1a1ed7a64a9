"""The ``tka`` command line (installed as the ``tka_cli`` package).

:func:`run` is the console script's entry point. It answers ``tka --version``
itself, before the command tree (and click, whose import alone costs several
times a bare interpreter start) is loaded; everything else goes to
:func:`tka_cli.main.main`.
"""

from __future__ import annotations

import sys

__all__ = ["run"]


def run() -> None:
    """Run the ``tka`` command line."""
    if sys.argv[1:] == ["--version"]:
        from tka import __version__

        print(f"tka {__version__}")
        return
    from .main import main

    main()
