"""Read a decision log: the DuckDB file itself, or its Parquet export while a server runs.

DuckDB lets one process open a database file for writing and then no other process may open
it, even read-only. A running server therefore exports committed rows as Parquet parts every
``log.export_interval_s`` to ``PATH.export/``; :func:`open_log` reads the file when it can and
falls back to the export (as fresh as its last part) when the file is locked. A file whose
server was killed is read with the rows its journal still holds (``PATH.journal/``), without
changing anything. A directory given as the path is read as an export (or any folder of
Parquet parts in that layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from banditroute.errors import InvalidArgument
from banditroute.store.journal import journal_dir, list_segments, segment_number
from banditroute.store.journal_rows import ingested_upto, journal_selects, sql_string
from banditroute.store.schema import CREATE_TABLES

TABLES = ("decisions", "feedback", "settlements")


@dataclass(frozen=True)
class LogSource:
    """An open, read-only view of a log: a connection with the three tables as views."""

    connection: duckdb.DuckDBPyConnection
    description: str
    live_export: bool


def export_selects(folder: Path, tables: Sequence[str] = TABLES) -> dict[str, str]:
    """``SELECT`` expressions over the Parquet parts of an export, per table that has any.
    Parts are matched by column name: those written before a column was added lack it."""
    selects = {}
    for table in tables:
        parts = sorted((folder / table).glob("part-*.parquet"))
        if parts:
            files = ", ".join(sql_string(str(p)) for p in parts)
            selects[table] = f"SELECT * FROM read_parquet([{files}], union_by_name = true)"
    return selects


def file_selects(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    alias: str,
    arg: str,
    tables: Sequence[str] = TABLES,
) -> tuple[dict[str, str], str, bool]:
    """Selects for one log file, attached read-only as ``alias``, or for its Parquet export
    while a server holds the file; with a description and whether it is the export. Only
    tables the file has are selected."""
    try:
        con.execute(f"ATTACH {sql_string(str(path))} AS {alias} (READ_ONLY)")
    except duckdb.Error as exc:
        export = path.with_name(path.name + ".export")
        if "lock" in str(exc).lower() and export.is_dir():
            return export_selects(export, tables), f"Parquet export {export} (file in use)", True
        raise InvalidArgument(f"{arg}: cannot open {str(path)!r}: {exc}", field=arg) from exc
    present = {
        row[0]
        for row in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
            "AND schema_name = 'main'",
            [alias],
        ).fetchall()
    }
    selects = {t: f"SELECT * FROM {alias}.main.{t}" for t in tables if t in present}
    description = f"DuckDB file {path}"
    leftovers = _journal_leftovers(con, path, alias, present)
    if leftovers:
        extra = journal_selects([str(p) for p in leftovers], selects)
        selects = {t: f"{q} UNION ALL BY NAME {extra[t]}" for t, q in selects.items()}
        description += f" + {len(leftovers)} journal segment(s) not yet moved in"
    return selects, description, False


def _journal_leftovers(
    con: duckdb.DuckDBPyConnection, path: Path, alias: str, present: set[str]
) -> list[Path]:
    """Segments of the file's journal its server has not moved in (it was killed, or is
    stopped before its next start): their rows belong to the log too."""
    if "journal_segments" not in present:
        return []
    mark = ingested_upto(con, f"{alias}.main.journal_segments")
    return [
        p
        for p in list_segments(journal_dir(path))
        if segment_number(p) > mark and p.stat().st_size > 0
    ]


def worker_files(path: Path) -> list[Path]:
    """The per-process log files of a multi-worker server (``NAME.wN.SUFFIX`` beside PATH),
    or the per-replica files of a cluster trainer's central log (``NAME.r-REPLICA.SUFFIX``)."""
    found = [*path.parent.glob(f"{path.stem}.w[0-9]*{path.suffix}")]
    found += path.parent.glob(f"{path.stem}.r-*{path.suffix}")
    return sorted(found)


def _create_views(
    con: duckdb.DuckDBPyConnection, sources: list[dict[str, str]], arg: str, where: str
) -> None:
    con.execute(CREATE_TABLES)  # typed, empty tables for any table no source has yet
    for table in TABLES:
        parts = [source[table] for source in sources if table in source]
        if table == "decisions" and not parts:
            raise InvalidArgument(f"{arg}: no decisions found in {where}", field=arg)
        if parts:
            con.execute(f"DROP TABLE {table}")
            con.execute(f"CREATE VIEW {table} AS " + " UNION ALL BY NAME ".join(parts))


def open_log(path: Path, *, arg: str = "--log") -> LogSource:
    """Open a log for reading; InvalidArgument naming ``arg`` if it cannot be read.

    ``path`` is a DuckDB log file, a Parquet export folder, or the configured log path of a
    multi-worker server (whose ``NAME.wN.duckdb`` files are then read together).
    """
    con = duckdb.connect()
    if path.is_dir():
        _create_views(con, [export_selects(path)], arg, str(path))
        return LogSource(con, f"Parquet export {path}", live_export=True)
    files = [path] if path.exists() else worker_files(path)
    if not files:
        raise InvalidArgument(f"{arg}: no such log {str(path)!r}", field=arg)
    sources, descriptions, live = [], [], False
    for index, file in enumerate(files):
        selects, description, from_export = file_selects(con, file, f"log{index}", arg)
        sources.append(selects)
        descriptions.append(description)
        live = live or from_export
    _create_views(con, sources, arg, str(path))
    return LogSource(con, "; ".join(descriptions), live_export=live)
