"""Password hashes for the web page's users: salted scrypt from the standard library, self-describing strings.

A stored hash reads ``scrypt$<n>$<r>$<p>$<salt base64>$<hash base64>``, so that stronger parameters can be chosen
later without breaking the passwords already stored (each is checked with the parameters it was made with).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
#: CPU/memory cost, block size and parallelism (about 16 MiB and a few tens of milliseconds per hash).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
#: Largest cost accepted from a stored hash (a damaged row must not make a check take minutes or gigabytes).
MAX_SCRYPT_N = 2**20


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # OpenSSL refuses scrypt above its default 32 MiB unless maxmem allows it: 128 * r * n bytes plus slack.
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=256 * r * n * p + 2**20
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """A new salted hash of ``password`` (two calls never give the same string)."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    return f"{SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from; False for a malformed or unknown hash."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return False
    try:
        n, r, p = (int(value) for value in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return False
    if not (1 < n <= MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= 64 and 1 <= p <= 16 and expected):
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(expected)), expected)
