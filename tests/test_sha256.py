"""The load path's SHA-256 (mome_edge.sha256) against hashlib, and which module does the hashing."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from mome_edge import sha256 as sha


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 4096, sha.BUILTIN_MAX_BYTES - 1, sha.BUILTIN_MAX_BYTES, 3 * sha.BUILTIN_MAX_BYTES])
def test_digest_equals_hashlib(size: int) -> None:
    data = bytes((i * 131 + 7) % 256 for i in range(size))
    assert sha.sha256_hex(data) == hashlib.sha256(data).hexdigest()
    streamed = sha.sha256(size)
    for start in range(0, size, 1000):
        streamed.update(memoryview(data)[start:start + 1000])
    assert streamed.hexdigest() == hashlib.sha256(data).hexdigest()


def _loaded_hashlib(size: int) -> bool:
    code = f"import sys\nfrom mome_edge.sha256 import sha256_hex\nsha256_hex(bytes({size}))\nprint('_hashlib' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_small_data_does_not_load_openssl_and_large_data_does() -> None:
    assert sha._builtin() is not None, "this interpreter has a built-in SHA-256 module (CPython always builds one)"
    assert not _loaded_hashlib(1000)
    assert _loaded_hashlib(sha.BUILTIN_MAX_BYTES)
