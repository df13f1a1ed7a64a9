"""Ed25519 signing and the two verification rules Tailscale's tka relies on.

Tailscale does not verify every Ed25519 signature the same way:

* :func:`verify_zip215` is ``github.com/hdevalence/ed25519consensus.Verify``
  (ZIP-215). It checks the *cofactored* equation ``[8][S]B == [8]R + [8][k]A``,
  accepts non-canonical point encodings, and requires ``S < L``. tka uses it
  for AUM signatures and for direct and credential node-key signatures.
* :func:`verify_go_stdlib` is Go's ``crypto/ed25519.Verify``. It recomputes
  ``R' = [S]B - [k]A`` (no cofactor), encodes ``R'`` canonically and compares
  it byte for byte with the received R. It also accepts a non-canonical public
  key and requires ``S < L``. tka uses it only for the outer signature of a
  rotation node-key signature.

In both, ``k = SHA-512(R_bytes || A_bytes || M) mod L`` is computed over the
bytes *as received*, not over re-encoded points.

Every verdict comes from a native library that implements the rule exactly;
tka does no curve arithmetic of its own:

* ZIP-215: ``ed25519-zebra`` (the Zcash Foundation's reference implementation
  of ZIP-215, through the ``py-ed25519-zebra-bindings`` wheel).
* Go's rule: libsodium first (PyNaCl). Released libsodium is narrower than
  Go's rule -- it also refuses small-order and non-canonical points -- so
  whatever it accepts Go accepts, and an honest signature costs one libsodium
  call. What libsodium refuses is decided by OpenSSL (through
  ``cryptography``), whose Ed25519 verification is Go's rule: cofactorless,
  R compared as bytes, lax point decoding, ``S < L``.
* :func:`verify_zip215_threaded` gives :func:`verify_zip215`'s verdict in a
  form that runs in parallel on threads: the zebra bindings hold the GIL, so
  libsodium (which releases it, and whose acceptance implies ZIP-215's) is
  asked first and zebra decides only what libsodium refuses.

At import, known-answer canaries (small-order and mixed-order keys,
non-canonical encodings, S >= L, honest and forged signatures) check that each
library still implements its rule. If one does not -- a libsodium built with
``ED25519_COMPAT`` or from its cofactored development branch, an OpenSSL or
zebra that changed its rules -- every verification and signing call raises
:class:`Ed25519LibraryError`: tka refuses to give verdicts rather than give
different ones from Tailscale's nodes. The pure-Python statement of both rules
lives in the test suite as an independent third opinion.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Final

import ed25519_zebra
import nacl._sodium
import nacl.bindings
import nacl.signing
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tka.errors import TKAError, UsageError

__all__ = [
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "Ed25519LibraryError",
    "generate_seed",
    "library_versions",
    "public_from_private",
    "public_from_seed",
    "sign",
    "verify_go_stdlib",
    "verify_zip215",
    "verify_zip215_many",
    "verify_zip215_threaded",
]

PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
SEED_SIZE: Final = 32
_PRIVATE_KEY_SIZE: Final = 64  # Go's ed25519.PrivateKey: seed || public


class Ed25519LibraryError(TKAError):
    """An installed Ed25519 library does not implement the rule tka relies on it for."""

    def hint(self) -> str | None:
        """What to do about it."""
        return (
            "reinstall the libraries tka depends on (PyNaCl, cryptography, "
            "py-ed25519-zebra-bindings) from their official wheels"
        )


# --- the native verifiers ------------------------------------------------------
#
# Each takes bytes objects of the right lengths (the public functions check);
# none raises for a bad signature.

_zebra_verify: Final = ed25519_zebra.ed_verify
_openssl_key: Final = Ed25519PublicKey.from_public_bytes


def _zebra(public: bytes, message: bytes, signature: bytes) -> bool:
    """ed25519-zebra's verdict: ZIP-215."""
    return bool(_zebra_verify(signature, message, public))


# libsodium's crypto_sign_open, called through PyNaCl's cffi module directly:
# PyNaCl's wrapper allocates and copies the opened message on every call, a
# few microseconds held under the GIL that threads verifying in parallel
# would otherwise queue for. Each thread keeps one output buffer.
_sodium_lib_open: Final = nacl._sodium.lib.crypto_sign_open
_sodium_new: Final = nacl._sodium.ffi.new
_buffers = threading.local()


def _sodium(public: bytes, message: bytes, signature: bytes) -> bool:
    """libsodium's verdict (narrower than both rules; releases the GIL)."""
    signed = signature + message
    n = len(signed)
    out = getattr(_buffers, "out", None)
    if out is None or len(out) < n:
        out = _buffers.out = _sodium_new("unsigned char[]", max(n, 1024))
        _buffers.length = _sodium_new("unsigned long long *")
    return bool(_sodium_lib_open(out, _buffers.length, signed, n, public) == 0)


def _openssl(public: bytes, message: bytes, signature: bytes) -> bool:
    """OpenSSL's verdict: Go's crypto/ed25519 rule."""
    try:
        # from_public_bytes only checks the length: the point is decoded by
        # the verification itself, which refuses what does not decode.
        _openssl_key(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


# --- known answers --------------------------------------------------------------
#
# (name, public, message, signature, ZIP-215 verdict, Go verdict), computed with
# the pure-Python reference in tests/ed25519_ref.py and checked there against it.
# Each covers one way the rules differ from each other or from RFC 8032.
_KNOWN_ANSWERS: Final = (
    (
        "honest signature",
        "ab020d5af731c23004ffd93365462dd861dc969c96f7e9024c2b632c6149aba3",
        "746b6120656432353531392063616e617279",
        "895cd9a124ab228433a2afe22262535078f56e98ef02027e181017b2a37eeddb"
        "2b9ce6d0fca7cbda6ed60e0153f623a8cae508daf4d5f439b17515f2f4d08603",
        True,
        True,
    ),
    (
        "forged signature (other message)",
        "ab020d5af731c23004ffd93365462dd861dc969c96f7e9024c2b632c6149aba3",
        "746b6120656432353531392063616e61727921",
        "895cd9a124ab228433a2afe22262535078f56e98ef02027e181017b2a37eeddb"
        "2b9ce6d0fca7cbda6ed60e0153f623a8cae508daf4d5f439b17515f2f4d08603",
        False,
        False,
    ),
    (
        "S + L (non-canonical S below 2^253)",
        "ab020d5af731c23004ffd93365462dd861dc969c96f7e9024c2b632c6149aba3",
        "746b6120656432353531392063616e617279",
        "895cd9a124ab228433a2afe22262535078f56e98ef02027e181017b2a37eeddb"
        "1870dc2d170bde32457306a431f002bdcae508daf4d5f439b17515f2f4d08613",
        False,
        False,
    ),
    (
        "S with its top three bits set",
        "ab020d5af731c23004ffd93365462dd861dc969c96f7e9024c2b632c6149aba3",
        "746b6120656432353531392063616e617279",
        "895cd9a124ab228433a2afe22262535078f56e98ef02027e181017b2a37eeddb"
        "2b9ce6d0fca7cbda6ed60e0153f623a8cae508daf4d5f439b17515f2f4d086e3",
        False,
        False,
    ),
    (
        "mixed-order key, honestly signed, k not a multiple of 8",
        "90265b84c3f752f9c36023a152f079b9e57e5590fbe7107ffb026116641479a6",
        "746b6120656432353531392063616e61727900",
        "936fcbbae8b8dc4df0bab97a003aae43471c82b3f363f9c774596c138fd3e83c"
        "223460b1602b5736f4bf25b4a71dfa3375fb5a433ed8709c743aad3774ad1e0b",
        True,
        False,
    ),
    (
        "small-order A and R, S = 0, R = -[k]A",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "746b6120656432353531392063616e61727900",
        "0000000000000000000000000000000000000000000000000000000000000080"
        "0000000000000000000000000000000000000000000000000000000000000000",
        True,
        True,
    ),
    (
        "small-order A and R, S = 0, R != -[k]A",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "746b6120656432353531392063616e61727900",
        "0100000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000",
        True,
        False,
    ),
    (
        "non-canonical A (y = p + 1)",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "746b6120656432353531392063616e617279",
        "0100000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000",
        True,
        True,
    ),
    (
        "negative-zero A (x = 0, sign bit set)",
        "0100000000000000000000000000000000000000000000000000000000000080",
        "746b6120656432353531392063616e617279",
        "0100000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000",
        True,
        True,
    ),
    (
        "non-canonical R (y = p + 1)",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "746b6120656432353531392063616e617279",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"
        "0000000000000000000000000000000000000000000000000000000000000000",
        True,
        False,
    ),
)


def _known_answer_failures() -> list[str]:
    """Every way an installed library departs from the rule tka uses it for.

    * ed25519-zebra must give the ZIP-215 verdict on every case;
    * OpenSSL must give Go's verdict on every case;
    * libsodium must refuse every case Go refuses (so that its acceptance
      implies both rules: ZIP-215 accepts a superset of Go's rule) and accept
      the honest signature.
    """
    problems = []
    for name, public_hex, message_hex, signature_hex, zip215, go in _KNOWN_ANSWERS:
        public = bytes.fromhex(public_hex)
        message = bytes.fromhex(message_hex)
        signature = bytes.fromhex(signature_hex)
        if _zebra(public, message, signature) != zip215:
            problems.append(f"ed25519-zebra departs from ZIP-215 on: {name}")
        if _openssl(public, message, signature) != go:
            problems.append(f"OpenSSL departs from Go's crypto/ed25519 on: {name}")
        accepted = _sodium(public, message, signature)
        if accepted and not go:
            problems.append(f"libsodium accepts what Go refuses: {name}")
        if name == "honest signature" and not accepted:
            problems.append("libsodium refuses an honest signature")
    return problems


_FAILURES: Final = tuple(_known_answer_failures())


def _library_error() -> Ed25519LibraryError:
    return Ed25519LibraryError(
        "refusing to verify or sign Ed25519 signatures: an installed library does not "
        "implement the rule tka relies on it for (" + "; ".join(_FAILURES) + ")"
    )


def _check_libraries() -> None:
    """Raise :class:`Ed25519LibraryError` when the known-answer checks failed at import."""
    if _FAILURES:
        raise _library_error()


# --- public API ----------------------------------------------------------------


def library_versions() -> dict[str, str]:
    """Versions of the native Ed25519 libraries tka calls (for reports and benchmarks)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"libsodium": "bundled with PyNaCl"}
    for dist in ("pynacl", "cryptography", "py-ed25519-zebra-bindings"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "?"
    return out


def verify_zip215(public: bytes, message: bytes, signature: bytes) -> bool:
    """Return whether *signature* is valid under ZIP-215 (ed25519consensus.Verify).

    Decided by ed25519-zebra. Wrong-length keys or signatures return
    ``False``. Raises only :class:`Ed25519LibraryError`, when the import-time
    known-answer checks failed.
    """
    if _FAILURES:
        raise _library_error()
    if len(public) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        verdict: bool = _zebra_verify(signature, message, public)
    except TypeError:
        # The bindings take exactly bytes, not bytearray or memoryview.
        verdict = _zebra_verify(bytes(signature), bytes(message), bytes(public))
    return verdict


def verify_zip215_threaded(public: bytes, message: bytes, signature: bytes) -> bool:
    """:func:`verify_zip215`'s verdict, computed so that threads run in parallel.

    The zebra bindings hold the GIL while they verify; libsodium releases
    it. libsodium accepts only what Go's rule accepts, which ZIP-215 accepts
    too, so it decides every signature it accepts (all honest ones) and
    ed25519-zebra decides the rest. One thread: slightly slower than
    :func:`verify_zip215`; several: they verify at the same time.
    """
    return _sodium_then(_zebra, public, message, signature)


def verify_zip215_many(items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """:func:`verify_zip215`'s verdict on each ``(public, message, signature)``, in order.

    For a worker thread checking a block of signatures while other threads
    do the same: the loop over libsodium holds the GIL only between two
    calls (libsodium releases it while it verifies), so the threads seldom
    wait for each other; ed25519-zebra then decides what libsodium refused
    (libsodium accepts only what both rules accept).
    """
    if _FAILURES:
        raise _library_error()
    open_ = _sodium_lib_open
    out = _sodium_new("unsigned char[]", _MANY_BUFFER)
    length = _sodium_new("unsigned long long *")
    verdicts = []
    for public, message, signature in items:
        if type(public) is not bytes or type(message) is not bytes or type(signature) is not bytes:
            verdicts.append(False)  # verify_zip215 below takes other byte types
            continue
        signed = signature + message
        n = len(signed)
        ok = (
            len(public) == PUBLIC_KEY_SIZE
            and len(signature) == SIGNATURE_SIZE
            and n <= _MANY_BUFFER
            and open_(out, length, signed, n, public) == 0
        )
        verdicts.append(ok)
    for i, ok in enumerate(verdicts):
        if not ok:
            verdicts[i] = verify_zip215(*items[i])
    return verdicts


# Output buffer of verify_zip215_many: messages are hashes (32 bytes), so
# anything longer is left to verify_zip215.
_MANY_BUFFER: Final = 1024


def verify_go_stdlib(public: bytes, message: bytes, signature: bytes) -> bool:
    """Return whether *signature* is valid under Go's ``crypto/ed25519.Verify``.

    libsodium decides what it accepts (Go accepts it too), OpenSSL the rest.
    Wrong-length keys or signatures return ``False`` (Go panics on a bad key
    length; tka checks the length before calling it). Raises only
    :class:`Ed25519LibraryError`, when the import-time known-answer checks
    failed.
    """
    return _sodium_then(_openssl, public, message, signature)


def _sodium_then(
    decide: Callable[[bytes, bytes, bytes], bool], public: bytes, message: bytes, signature: bytes
) -> bool:
    """libsodium's acceptance (which implies both rules), else *decide*'s verdict."""
    if _FAILURES:
        raise _library_error()
    if len(public) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    public, message, signature = bytes(public), bytes(message), bytes(signature)
    return _sodium(public, message, signature) or decide(public, message, signature)


def _check_private(private: bytes) -> None:
    if len(private) not in (SEED_SIZE, _PRIVATE_KEY_SIZE):
        raise UsageError(
            f"ed25519 private key must be {SEED_SIZE} or {_PRIVATE_KEY_SIZE} bytes, "
            f"got {len(private)}"
        )


def sign(private: bytes, message: bytes) -> bytes:
    """Sign *message* exactly as Go's ``ed25519.Sign`` (deterministic RFC 8032, via libsodium).

    *private* is either a 32-byte seed or Go's 64-byte ``ed25519.PrivateKey``
    (seed followed by public key). Raises :class:`~tka.errors.UsageError` on
    any other length, and :class:`Ed25519LibraryError` when the import-time
    known-answer checks failed (a library that verifies wrongly is not
    trusted to sign either).

    With the 64-byte form, Go hashes the *stored* public half into k without
    checking it against the seed, and so does libsodium's ``crypto_sign``; a
    key whose halves disagree therefore gives the same (unverifiable) bytes
    as in Go rather than an error.
    """
    _check_libraries()
    _check_private(private)
    if len(private) == SEED_SIZE:
        seeded: bytes = nacl.signing.SigningKey(bytes(private)).sign(bytes(message)).signature
        return seeded
    signed: bytes = nacl.bindings.crypto_sign(bytes(message), bytes(private))
    return signed[:SIGNATURE_SIZE]


def public_from_private(private: bytes) -> bytes:
    """Return the public key of a 32-byte seed or of Go's 64-byte private key.

    For the 64-byte form this is the stored public half, as Go's
    ``PrivateKey.Public`` returns it (it is not re-derived from the seed).
    Raises :class:`~tka.errors.UsageError` on any other length.
    """
    _check_private(private)
    if len(private) == SEED_SIZE:
        return public_from_seed(private)
    return bytes(private[SEED_SIZE:])


def public_from_seed(seed: bytes) -> bytes:
    """Return the 32-byte public key for a 32-byte seed.

    Raises :class:`~tka.errors.UsageError` when *seed* is not 32 bytes.
    """
    if len(seed) != SEED_SIZE:
        raise UsageError(f"ed25519 seed must be {SEED_SIZE} bytes, got {len(seed)}")
    public: bytes = nacl.signing.SigningKey(bytes(seed)).verify_key.encode()
    return public


def generate_seed() -> bytes:
    """Return a fresh random 32-byte seed from the operating system's CSPRNG."""
    return os.urandom(SEED_SIZE)
