"""Read a decision log: the DuckDB file itself, or its Parquet export while a server runs.

DuckDB lets one process open a database file for writing and then no other process may open
it, even read-only. A running server therefore exports committed rows as Parquet parts every
``log.export_interval_s`` to ``PATH.export/``; :func:`open_log` reads the file when it can and
falls back to the export (as fresh as its last part) when the file is locked. A directory
given as the path is read as an export (or any folder of Parquet parts in that layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from banditroute.errors import InvalidArgument
from banditroute.store.schema import CREATE_TABLES

TABLES = ("decisions", "feedback", "settlements")


@dataclass(frozen=True)
class LogSource:
    """An open, read-only view of a log: a connection with the three tables as views."""

    connection: duckdb.DuckDBPyConnection
    description: str
    live_export: bool


def _export_views(con: duckdb.DuckDBPyConnection, folder: Path, arg: str) -> None:
    con.execute(CREATE_TABLES)  # typed, empty tables for any table with no parts yet
    for table in TABLES:
        parts = sorted((folder / table).glob("part-*.parquet"))
        if table == "decisions" and not parts:
            raise InvalidArgument(
                f"{arg}: no Parquet parts under {folder / table} (has the server exported yet?)",
                field=arg,
            )
        if parts:
            files = ", ".join(f"'{p}'" for p in parts)
            con.execute(f"DROP TABLE {table}")
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{files}])")


def open_log(path: Path, *, arg: str = "--log") -> LogSource:
    """Open a log for reading; InvalidArgument naming ``arg`` if it cannot be read."""
    con = duckdb.connect()
    if path.is_dir():
        _export_views(con, path, arg)
        return LogSource(con, f"Parquet export {path}", live_export=True)
    if not path.exists():
        raise InvalidArgument(f"{arg}: no such log {str(path)!r}", field=arg)
    try:
        con.execute(f"ATTACH '{path}' AS log (READ_ONLY)")
    except duckdb.Error as exc:
        export = path.with_name(path.name + ".export")
        if "lock" in str(exc).lower() and export.is_dir():
            _export_views(con, export, arg)
            return LogSource(
                con, f"Parquet export {export} (the log file is in use)", live_export=True
            )
        raise InvalidArgument(f"{arg}: cannot open {str(path)!r}: {exc}", field=arg) from exc
    for table in TABLES:
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM log.main.{table}")
    return LogSource(con, f"DuckDB file {path}", live_export=False)
