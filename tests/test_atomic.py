"""The one atomic-write mechanism every writer uses: the destination holds the old file or
the complete new one, never a partial one, and no temp file is left behind."""

from __future__ import annotations

import pytest

from mome_edge.atomic import atomic_file, atomic_write_bytes
from mome_edge.errors import ConfigError


def test_streamed_file_appears_only_when_complete(tmp_path):
    path = tmp_path / "preds.csv"
    path.write_text("old\n")
    with atomic_file(path, "w") as handle:
        handle.write("a,b\n")
        assert path.read_text() == "old\n"  # not yet replaced while writing
        handle.write("1,2\n")
    assert path.read_text() == "a,b\n1,2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["preds.csv"]


def test_failure_midway_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_file(path) as handle:
            handle.write(b"partial")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_a_folder_is_not_a_file(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        with atomic_file(tmp_path):
            pass
