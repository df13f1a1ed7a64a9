"""Size and iteration caps, each matching a constant in Tailscale's ``tka`` package.

These are behaviour, not tuning: a chain or message that Tailscale refuses
because of one of these caps, tka refuses too, so that every node reaches the
same verdict on the same data.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CBOR_MAX_ARRAY_ELEMENTS",
    "CBOR_MAX_MAP_PAIRS",
    "CBOR_MAX_NESTED_LEVELS",
    "CHECKPOINT_EVERY",
    "COMPACTION_MIN_AGE_SECONDS",
    "COMPACTION_MIN_CHAIN",
    "DISABLEMENT_LENGTH",
    "KEY_VOTES_MAX",
    "MAX_DISABLEMENT_VALUES",
    "MAX_KEYS",
    "MAX_META_BYTES",
    "MAX_PREV_NODE_KEYS",
    "MAX_SCAN_ITERATIONS",
    "MAX_SYNC_HEAD_INTERSECTION_ITER",
    "MAX_SYNC_ITER",
]

MAX_DISABLEMENT_VALUES: Final = 32  # maxDisablementValues: entries in a checkpoint's state
DISABLEMENT_LENGTH: Final = 32  # disablementLength: bytes of one KDF output
MAX_KEYS: Final = 512  # maxKeys: trusted keys in a checkpoint's state
MAX_META_BYTES: Final = 512  # maxMetaBytes: summed key+value length of one key's metadata
KEY_VOTES_MAX: Final = 4096  # Key.StaticValidate: votes must be 1..4096
MAX_SYNC_ITER: Final = 2000  # maxSyncIter: any-intersection search during sync
MAX_SYNC_HEAD_INTERSECTION_ITER: Final = 1000  # maxSyncHeadIntersectionIter
MAX_SCAN_ITERATIONS: Final = 2000  # maxScanIterations: walks over the AUM tree
MAX_PREV_NODE_KEYS: Final = 15  # maxPrevKeys in sig.go: ResignNKS trims rotation chains

# cborDecOpts in tka.go.
CBOR_MAX_NESTED_LEVELS: Final = 16
CBOR_MAX_ARRAY_ELEMENTS: Final = 4096
CBOR_MAX_MAP_PAIRS: Final = 1024

# CompactionDefaults in limits.go.
COMPACTION_MIN_CHAIN: Final = 24
COMPACTION_MIN_AGE_SECONDS: Final = 14 * 24 * 3600

# builder.go: Finalize appends a checkpoint once this many AUMs follow the last one.
CHECKPOINT_EVERY: Final = 50
