"""The ``tka`` command line (installed as the ``tka_cli`` package).

:func:`run` is the console script's entry point. ``tka --version`` and the
offline ``tka lock status`` are answered by :mod:`tka_cli.fast_path` before
the command tree (and click, whose import alone costs several times a bare
interpreter start) is loaded; everything else goes to
:func:`tka_cli.main.main`.
"""

from __future__ import annotations

import sys

__all__ = ["run"]


def run() -> None:
    """Run the ``tka`` command line."""
    from .fast_path import answer

    code = answer(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from .main import main

    main()
