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
    "MAX_SYNC_HEAD_INTERSECTION_ITER_MAIN",
    "MAX_SYNC_HEAD_INTERSECTION_ITER_V1_102",
    "MAX_SYNC_ITER",
    "SYNC_ANCESTORS_SKIP_SHIFT",
    "SYNC_ANCESTORS_SKIP_START",
]

MAX_DISABLEMENT_VALUES: Final = 32  # maxDisablementValues: entries in a checkpoint's state
DISABLEMENT_LENGTH: Final = 32  # disablementLength: bytes of one KDF output
MAX_KEYS: Final = 512  # maxKeys: trusted keys in a checkpoint's state
MAX_META_BYTES: Final = 512  # maxMetaBytes: summed key+value length of one key's metadata
KEY_VOTES_MAX: Final = 4096  # Key.StaticValidate: votes must be 1..4096
MAX_SYNC_ITER: Final = 2000  # maxSyncIter: any-intersection search during sync
MAX_SCAN_ITERATIONS: Final = 2000  # maxScanIterations: walks over the AUM tree
MAX_PREV_NODE_KEYS: Final = 15  # maxPrevKeys in sig.go: ResignNKS trims rotation chains

# Sync (sync.go), which differs between Tailscale's generations: see tka/sync.py.
# maxSyncHeadIntersectionIter in the releases (v1.101.0-pre through v1.102.5,
# and v1.103.0-pre): head-intersection walk and SyncOffer's walk.
MAX_SYNC_HEAD_INTERSECTION_ITER_V1_102: Final = 400
# maxSyncHeadIntersectionIter on main since f6fa29463 (de9ec7ee, the vectors' commit).
MAX_SYNC_HEAD_INTERSECTION_ITER_MAIN: Final = 1000
# ancestorsSkipStart and ancestorsSkipShift (sync.go, releases only; removed on
# main by f6fa29463): SyncOffer lists the AUMs 4, 16, 64, 256, ... steps back.
SYNC_ANCESTORS_SKIP_START: Final = 4
SYNC_ANCESTORS_SKIP_SHIFT: Final = 2

# cborDecOpts in tka.go.
CBOR_MAX_NESTED_LEVELS: Final = 16
CBOR_MAX_ARRAY_ELEMENTS: Final = 4096
CBOR_MAX_MAP_PAIRS: Final = 1024

# CompactionDefaults in limits.go.
COMPACTION_MIN_CHAIN: Final = 24
COMPACTION_MIN_AGE_SECONDS: Final = 14 * 24 * 3600

# builder.go: Finalize appends a checkpoint once this many AUMs follow the last one.
CHECKPOINT_EVERY: Final = 50
