"""Where the real data files live: --data-dir, MOME_DATA_DIR, or this workplace's shared folder."""

from __future__ import annotations

import os
from pathlib import Path

from mome_edge.errors import DataError

DATA_DIR_ENV = "MOME_DATA_DIR"
# <project root>/../shared/data: where this workplace keeps the real files (never copied
# into the repository); only used when it exists.
WORKPLACE_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def default_data_dir() -> Path | None:
    """MOME_DATA_DIR if set, else the project's sibling ``../shared/data`` if it exists, else None."""
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return WORKPLACE_DATA_DIR if WORKPLACE_DATA_DIR.is_dir() else None


def resolve_data_dir(data_dir: str | Path | None, *, holds: str) -> Path:
    """The data folder to read, or DataError naming the fix; ``holds`` describes the expected files."""
    path = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if path is None:
        raise DataError(f"no data folder given: set --data-dir or {DATA_DIR_ENV} to the folder holding {holds}")
    if not path.exists():
        raise DataError(
            f"data folder {str(path)!r} does not exist; set --data-dir or {DATA_DIR_ENV} to the folder holding {holds}"
        )
    return path
