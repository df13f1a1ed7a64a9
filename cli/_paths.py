"""Default locations of tka's files (no click here: the start-up fast path uses it)."""

from __future__ import annotations

import os

__all__ = ["default_state_dir"]


def default_state_dir() -> str:
    """``$TKA_STATE_DIR``, else the platform's user data directory for tka."""
    env = os.environ.get("TKA_STATE_DIR")
    if env:
        return env
    import platformdirs

    return platformdirs.user_data_dir("tka")
