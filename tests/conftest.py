"""Shared pytest fixtures. Add new fixtures in their own delimited block."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# --- data: the real data folder (shared_data_dir) -----------------------------------------
# The real files live outside the repository, in <project root>/../shared/data, or wherever
# MOME_DATA_DIR points. Missing data fails in CI (env CI set) and skips elsewhere.
WORKPLACE_DATA_DIR = Path(__file__).parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder holding census-income/ and aliexpress-sample/ (MOME_DATA_DIR or ../shared/data)."""
    env = os.environ.get("MOME_DATA_DIR", "").strip()
    path = Path(env).expanduser() if env else WORKPLACE_DATA_DIR
    if not path.is_dir():
        message = (
            f"real data folder {path} not found; set MOME_DATA_DIR to the folder holding "
            "census-income/census-income.test.gz and aliexpress-sample/"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


# --- end data ------------------------------------------------------------------------------
