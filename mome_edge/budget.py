"""Size budgets: what `--budget SIZE` means, in bytes of the `.mome` file that
`mome-edge compile RUN -o X --weights W` writes (numpy-free, torch-free: parsed by the CLI).

    parse_size("120KB") == 120_000      KB, MB, GB = 1000^k bytes
    parse_size("96KiB") == 98_304       KiB, MiB, GiB = 1024^k bytes

A run trained with a budget compiles (with the budget's weights) into a file of
[BUDGET_LOWER_FRACTION x SIZE, SIZE] bytes.
"""

from __future__ import annotations

import re

from mome_edge.errors import ConfigError

BUDGET_LOWER_FRACTION = 0.85  # the compiled file is within [0.85, 1.0] x SIZE
_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str, flag: str = "--budget") -> int:
    """'120000', '120KB', '1.5MB', '96KiB' -> bytes (int). KB = 1000 B, KiB = 1024 B."""
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(
            f"{flag} {text!r} is not a size; write a number of bytes with an optional unit, e.g. 120000, 120KB, 1.5MB or 96KiB "
            "(KB = 1000 bytes, KiB = 1024 bytes)"
        )
    value = round(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise ConfigError(f"{flag} {text!r} is less than one byte; give a positive size such as 100KB")
    return int(value)


def format_size(n: int) -> str:
    """Bytes for people: '98,304 bytes (98.3 KB)'."""
    if n >= 1000**2:
        return f"{n:,} bytes ({n / 1000**2:.2f} MB)"
    if n >= 1000:
        return f"{n:,} bytes ({n / 1000:.1f} KB)"
    return f"{n:,} bytes"


def budget_range(budget_bytes: int) -> tuple[int, int]:
    """The accepted compiled sizes: (ceil(0.85 x SIZE), SIZE)."""
    return -(-int(budget_bytes * BUDGET_LOWER_FRACTION * 1000) // 1000), int(budget_bytes)
