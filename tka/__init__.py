"""tka: a Tailnet Lock (Tailnet Key Authority) toolkit, wire-compatible with Tailscale.

The wire model lives in :mod:`tka.aum`, :mod:`tka.state`, :mod:`tka.key` and
:mod:`tka.sig`; the authority engine in :mod:`tka.authority` with storage
backends under :mod:`tka.storage`; errors in :mod:`tka.errors`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
