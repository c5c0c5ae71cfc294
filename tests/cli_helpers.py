"""Running `mome-edge` in process and snapshotting folders, for the hardening CLI tests."""

from __future__ import annotations

import contextlib
import io
import traceback
from pathlib import Path

from mome_edge.cli.main import main


def invoke(argv: list[str]) -> tuple[int, str, str]:
    """`mome-edge argv` in process: (exit code, stdout, stderr); an escaping exception is a
    traceback, reported as exit code -1 with the traceback as stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - a traceback is exactly what the test reports
            return -1, out.getvalue(), err.getvalue() + "Traceback (in process):\n" + traceback.format_exc()
        else:
            code = 0
    return code, out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Relative path -> bytes (None for folders) of everything under `folder`."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}
