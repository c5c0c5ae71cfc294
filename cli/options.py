"""Option declarations shared by several commands (one definition, one spelling)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DataDir = typer.Option(
    None, "--data-dir", envvar="MOME_DATA_DIR", help="Folder holding the real data files (default: $MOME_DATA_DIR).",
    show_default=False,
)
Json = typer.Option(False, "--json", help="Print exactly one JSON object on stdout instead of a table.")
Quiet = typer.Option(False, "--quiet", "-q", help="No progress bars or per-epoch lines.")


def data_dir_or_none(value: Optional[Path]) -> Optional[str]:
    return str(value) if value is not None else None
