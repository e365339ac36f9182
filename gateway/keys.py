"""Assertion signing keys: EC P-256 private keys read from PEM files, and new ones made on request.

A key is identified by its RFC 7638 thumbprint, so the same key always has the same `kid` on every
replica and after every restart, whatever its file is called.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from jwt.utils import base64url_encode

ALGORITHM = "ES256"
# The members RFC 7638 hashes for an EC key, in the lexicographic order it prescribes.
_THUMBPRINT_MEMBERS = ("crv", "kty", "x", "y")
KEY_FILE_MODE = 0o600
# A P-256 key in PEM is about 250 bytes; anything much larger is not one (and /dev/zero is not
# read to the end of memory).
MAX_KEY_FILE_BYTES = 64 * 1024


class UnusableKey(ValueError):
    """A key file that cannot sign assertions; the text says why, for a config error."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One private key and its published public half (a JWK with kid, alg and use)."""

    path: str
    kid: str
    jwk: dict[str, str] = field(compare=False, hash=False)
    private: ec.EllipticCurvePrivateKey = field(compare=False, hash=False, repr=False)


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638: SHA-256 over the required members as compact, key-sorted JSON, base64url."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64url_encode(hashlib.sha256(canonical).digest()).decode()


def _describe(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"an EC key on {key.curve.name}"
    return f"a key of type {type(key).__name__.removeprefix('_').replace('PrivateKey', '')}"


def _read_small_file(path: str) -> bytes:
    """A regular file's bytes; a FIFO, device or directory is refused before it can block."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnusableKey(f"cannot read {path!r}: not a regular file")
            data = os.read(fd, MAX_KEY_FILE_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise UnusableKey(f"cannot read {path!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        # A path the OS cannot take at all (a NUL byte in it).
        raise UnusableKey(f"cannot read {path!r}: {exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise UnusableKey(f"{path!r} is too large to be a key ({MAX_KEY_FILE_BYTES} bytes at most)")
    return data


def load_signing_key(path: str) -> SigningKey:
    """Read a PEM file holding an EC P-256 private key; UnusableKey says what is wrong with it."""
    data = _read_small_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise UnusableKey(f"{path!r} is encrypted; give the key without a passphrase") from None
    except ValueError:
        try:
            serialization.load_pem_public_key(data)
        except ValueError:
            raise UnusableKey(f"{path!r} is not a PEM private key") from None
        raise UnusableKey(
            f"{path!r} holds a public key; signing needs the private key"
            " (`hamrah-gateway keygen PATH` makes one)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise UnusableKey(f"{path!r} holds {_describe(key)}; assertions are signed with EC P-256")
    jwk: dict[str, str] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    kid = thumbprint(jwk)
    return SigningKey(path, kid, {**jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"}, key)


def write_new_key(path: Path) -> SigningKey:
    """Make a new P-256 private key in PEM at path, readable by its owner only; never overwrite.

    The file is created exclusively with its final mode, so no other user can open it in between
    and an existing key (perhaps the one signing right now) is never replaced.
    """
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        # The process umask may only take bits away; this states the mode exactly.
        os.fchmod(fd, KEY_FILE_MODE)
        os.write(fd, pem)
    finally:
        os.close(fd)
    return load_signing_key(str(path))
