"""The ``tka`` command line (installed as the ``tka_cli`` package)."""
