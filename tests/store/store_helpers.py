"""Helpers shared by the store tests."""

from __future__ import annotations

from pathlib import Path

import duckdb


def count_rows(path: Path, table: str) -> int:
    """Rows in a table of the DuckDB file at ``path``, read through a second connection of
    this process."""
    with duckdb.connect(str(path)) as con:
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])
