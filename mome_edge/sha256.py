"""SHA-256 on the device's load path, without loading OpenSSL for small files.

`import hashlib` loads OpenSSL's libcrypto: ~2.5 ms (`python -X importtime -c "import hashlib"`),
a tenth of the 30 ms cold-start budget. The interpreter's own SHA-256 module (`_sha256` up to
Python 3.11, `_sha2` from 3.12) loads in ~0.3 ms but hashes ~6x slower: 0.9 ms against 0.15 ms
for the 229 KB census model, 9 ms against 1 ms for a 1.7 MB model. So data below
BUILTIN_MAX_BYTES is hashed by the built-in module unless hashlib is loaded already, and
everything else by hashlib. Both compute the same digest (tests/test_sha256.py).
"""

from __future__ import annotations

import sys
from typing import Any

BUILTIN_MAX_BYTES = 512 * 1024  # the built-in module's extra hashing time stays below hashlib's load time


def _builtin() -> Any:
    try:
        from _sha2 import sha256  # Python >= 3.12
    except ImportError:
        try:
            from _sha256 import sha256  # Python <= 3.11
        except ImportError:  # an interpreter built without it: hashlib always works
            return None
    return sha256


def sha256(size: int) -> Any:
    """A new SHA-256 hash object (hashlib's interface: update, hexdigest) for `size` bytes of data."""
    if size < BUILTIN_MAX_BYTES and "hashlib" not in sys.modules:
        builtin = _builtin()
        if builtin is not None:
            return builtin()
    import hashlib

    return hashlib.sha256()


def sha256_hex(data: bytes | memoryview) -> str:
    """Hex SHA-256 of `data`."""
    digest = sha256(len(data))
    digest.update(data)
    return digest.hexdigest()
