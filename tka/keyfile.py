"""Tailnet-lock private key files: created 0600, refused when others can read them.

A key file holds one Ed25519 private key, either in Tailscale's text form
(``nlpriv:<hex>``, unencrypted) or, when a passphrase is given, as a PKCS#8
PEM encrypted with the ``cryptography`` package's best available scheme.
Private key material never appears in an error message or ``repr``.
"""

from __future__ import annotations

import os
import stat

from tka._fileutil import atomic_write
from tka.errors import DecodeError, StorageError, UsageError
from tka.nlkeys import NLPrivate

__all__ = [
    "check_private_file_mode",
    "load_private_key",
    "private_key_bytes",
    "save_private_key",
]

_PEM_MARKER = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
#: A key file is a line of text or one small PEM block: anything larger is
#: not a key file, and is refused before it is read.
MAX_KEY_FILE_BYTES = 16 * 1024


def check_private_file_mode(path: str) -> None:
    """Refuse a private key file that its group or other users may read or write."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise StorageError(f"private key file {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise StorageError(f"private key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise StorageError(
            f"private key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )


def save_private_key(path: str, key: NLPrivate, passphrase: bytes | None = None) -> None:
    """Write *key* to a new file at *path* with mode 0600.

    Refuses anything already at *path*: a file, a link (even one leading
    nowhere), a device; the file is linked into place, so one that appears
    meanwhile is not replaced either.
    """
    if os.path.lexists(path):
        raise UsageError(f"refusing to overwrite the existing private key file {path}")
    atomic_write(path, private_key_bytes(key, passphrase), mode=0o600, replace=False)


def private_key_bytes(key: NLPrivate, passphrase: bytes | None = None) -> bytes:
    """The content of a key file for *key*: ``nlpriv:<hex>``, or an encrypted PEM."""
    if passphrase is not None:
        if not passphrase:
            raise UsageError("the passphrase is empty")
        # Imported here: only encrypted keys need it, and it is slow to load.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        priv = Ed25519PrivateKey.from_private_bytes(key.seed)
        data = priv.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
    else:
        data = (key.text() + "\n").encode("ascii")
    return data


def load_private_key(path: str, passphrase: bytes | None = None) -> NLPrivate:
    """Read the private key at *path*, checking its permissions first."""
    check_private_file_mode(path)
    if os.path.getsize(path) > MAX_KEY_FILE_BYTES:
        raise DecodeError(f"private key file {path} is too large to be a key file")
    with open(path, "rb") as f:
        data = f.read(MAX_KEY_FILE_BYTES + 1)
    if data.lstrip().startswith(_PEM_MARKER):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        if passphrase is None:
            raise UsageError(
                f"private key file {path} is encrypted: pass --passphrase-file "
                "or set TKA_PASSPHRASE_FILE"
            )
        try:
            priv = serialization.load_pem_private_key(data, password=passphrase)
        except (ValueError, TypeError):
            raise DecodeError(f"cannot decrypt {path}: wrong passphrase or damaged file") from None
        if not isinstance(priv, Ed25519PrivateKey):
            raise DecodeError(f"private key file {path} does not hold an Ed25519 key")
        seed = priv.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return NLPrivate.from_seed(seed)
    try:
        return NLPrivate.from_text(data.decode("ascii").strip())
    except (UnicodeDecodeError, DecodeError):
        raise DecodeError(f"private key file {path} does not hold an nlpriv: key") from None
