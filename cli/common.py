"""What every command shares: option parsing helpers, rendering, and the error boundary."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table

from mome_edge.errors import ConfigError

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def parse_sizes(text: str, flag: str, *, allow_empty: bool = False) -> tuple[int, ...]:
    """'256,128' -> (256, 128), with an error that names the flag."""
    text = text.strip()
    if not text and allow_empty:
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not a list of sizes; write positive integers separated by commas, e.g. 256,128") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise ConfigError(f"{flag} {text!r} has a size <= 0; write positive integers separated by commas, e.g. 256,128")
    return sizes


def parse_int_list(text: str, flag: str) -> tuple[int, ...]:
    return parse_sizes(text, flag)


def print_json(obj: Any) -> None:
    """Exactly one JSON object on stdout (NaN becomes null)."""
    sys.stdout.write(json.dumps(_nan_to_none(obj), indent=2) + "\n")
    sys.stdout.flush()


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def metrics_table(title: str, rows: Iterable[tuple[str, dict[str, dict[str, float | None]]]], tasks: Sequence[str]) -> Table:
    """Rows of (label, {task: {"auc", "logloss"}}) as a table with AUC/logloss per task."""
    table = Table(title=title)
    table.add_column("model")
    for task in tasks:
        table.add_column(f"{task} AUC", justify="right")
        table.add_column(f"{task} logloss", justify="right")
    for label, metrics in rows:
        cells = []
        for task in tasks:
            cells += [fmt(metrics[task]["auc"]), fmt(metrics[task]["logloss"])]
        table.add_row(label, *cells)
    return table


def components_table(title: str, components: dict[str, int], file_bytes: int) -> Table:
    """Bytes by component of a model file, with each one's share, and the file total."""
    table = Table(title=title)
    table.add_column("component")
    table.add_column("bytes", justify="right")
    table.add_column("share", justify="right")
    for name, size in components.items():
        table.add_row(name, f"{size:,}", f"{100 * size / file_bytes:.1f}%")
    table.add_row("[bold]file[/bold]", f"[bold]{file_bytes:,}[/bold]", "100.0%")
    return table
