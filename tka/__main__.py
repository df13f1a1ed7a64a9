"""``python -m tka``: the ``tka`` command line (the same as the ``tka`` console script)."""

from importlib import import_module

if __name__ == "__main__":
    # By name: the CLI is a separate top-level package (tka_cli) that the
    # library itself never imports.
    import_module("tka_cli").run()
