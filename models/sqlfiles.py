"""Named SQL statements kept in `sql/*.sql` (`-- name: x` blocks), loaded once and run by name."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_NAME = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)


@cache
def statements(filename: str) -> dict[str, str]:
    """Every named statement of a file, in file order."""
    text = (SQL_DIR / filename).read_text()
    parts = _NAME.split(text)
    named = dict(zip(parts[1::2], (body.strip() for body in parts[2::2]), strict=True))
    if not named:
        raise ValueError(f"{filename} has no '-- name:' statements")
    return named


def statement(filename: str, name: str) -> str:
    return statements(filename)[name]
