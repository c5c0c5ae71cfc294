"""Atomic file writes: temp file in the destination folder -> fsync -> rename.

A reader (or a crash) sees the old file or the new one, never a partial one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from contextlib import contextmanager
from typing import IO, Any, Iterator

from mome_edge.errors import ConfigError, MomeError


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it: set and restore, once at import
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; a written artifact should be readable like any file open() makes
_FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file written in steps (e.g. batch by batch) that appears at `path` only when complete.

    Raises:
        ConfigError: `path` is a folder.
        MomeError: the folder is not writable.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"the output {path} is a folder; give a file path inside it")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise MomeError(f"cannot write to folder {folder} ({exc.strerror}); choose a writable output location") from None
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _FILE_MODE)
        text = "b" not in mode
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if text else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_folder(folder)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def fsync_folder(folder: Path) -> None:
    """Make renames in `folder` durable (the folder entry reaches the disk)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
