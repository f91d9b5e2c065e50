"""Operator subcommands: ``banditroute audit verify`` and ``banditroute report``.

Wire them into the main CLI with ``add_parsers(subparsers)``; each parser's default ``handler``
takes the parsed namespace and returns the exit code. Arguments are taken as text and checked
by the handlers, which raise :class:`~banditroute.errors.InvalidArgument` with a message that
starts with the argument's name (``--since: 'yesterday' is not an ISO 8601 time ...``).

- ``audit verify --log PATH [--expect-head SEQ:HASH]``: exit 0 if the audit chain is intact
  and the decisions, feedback and settlements tables hold exactly the rows it describes
  (printing its head, to note and pass as ``--expect-head`` next time), 1 naming the first bad
  record (or row) if not.
- ``report --log PATH [--bucket minute|hour|day] [--since ISO] [--until ISO] [--plot OUT.png]
  [--json OUT.json]``: usage per model, tenant and time bucket (see :mod:`banditroute.usage`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from banditroute.choices import BUCKETS
from banditroute.errors import InvalidArgument

# The handlers import the log readers (duckdb, pyarrow) and matplotlib when they run: building
# the parser, and so ``--help``, must not load them (tests/test_cli_imports.py).

__all__ = ["add_parsers", "run_audit_verify", "run_report"]

_HEAD = re.compile(r"^(\d+):([0-9a-fA-F]{64})$")


def add_parsers(subparsers: Any) -> None:
    """Add ``audit`` (with ``verify``) and ``report`` to ``subparsers`` (from
    ``add_subparsers``)."""
    audit = subparsers.add_parser(
        "audit",
        help="check the tamper-evident audit log",
        description="Tools for the hash-chained audit table of a decision log (see verify).",
    )
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    check = audit_sub.add_parser(
        "verify",
        help="recompute the audit hash chain and report the first bad record",
        description=(
            "Recompute every audit record's hash and check the chain links and numbering, "
            "and that every decisions, feedback and settlements row is the one its record "
            "describes (no row missing, altered, inserted or duplicated). Exit 0 if intact, 1 "
            "if not. A chain alone cannot reveal that its newest records "
            "were deleted: pass the head printed by an earlier run as --expect-head."
        ),
    )
    check.add_argument("--log", required=True, help="DuckDB log file or its Parquet export")
    check.add_argument(
        "--expect-head",
        metavar="SEQ:HASH",
        help="a head noted earlier: the chain must still reach it unchanged",
    )
    check.set_defaults(handler=run_audit_verify)

    report = subparsers.add_parser(
        "report",
        help="usage per model, tenant and time bucket",
        description=(
            "Calls, spend, mean quality, latency p50/p95 and error rate per served model, per "
            "tenant and per time bucket (UTC), from a decision log."
        ),
    )
    report.add_argument("--log", required=True, help="DuckDB log file or its Parquet export")
    report.add_argument(
        "--bucket",
        default="hour",
        metavar="{" + ",".join(BUCKETS) + "}",
        help="width of the time buckets (UTC) the usage is grouped by (default: hour)",
    )
    report.add_argument("--since", metavar="ISO", help="first decision time (inclusive)")
    report.add_argument("--until", metavar="ISO", help="end of the range (exclusive)")
    report.add_argument("--plot", metavar="OUT.png", help="write a PNG of usage over time")
    report.add_argument("--json", metavar="OUT.json", help="write the report as JSON")
    report.set_defaults(handler=run_report)


def _log_path(text: Any) -> Path:
    if not text:
        raise InvalidArgument("--log: a log path is required", field="--log")
    return Path(text)


def _head(text: str) -> tuple[int, str]:
    match = _HEAD.match(text.strip())
    if match is None:
        raise InvalidArgument(
            f"--expect-head: expected SEQ:HASH (a number, a colon, 64 hex digits), got {text!r}",
            field="--expect-head",
        )
    return int(match.group(1)), match.group(2).lower()


def _output(text: str | None, arg: str) -> Path | None:
    if text is None:
        return None
    path = Path(text)
    if not path.parent.is_dir():
        raise InvalidArgument(f"{arg}: directory {str(path.parent)!r} does not exist", field=arg)
    return path


def run_audit_verify(args: argparse.Namespace) -> int:
    """``audit verify``: 0 if the chain is intact, 1 (naming the first bad record) if not.

    The configured log path of a multi-worker server (only its ``NAME.wN.duckdb`` files
    exist) verifies each worker file's own chain; 1 if any is broken."""
    from banditroute.audit import open_audit_log, verify
    from banditroute.store.reader import worker_files

    path = _log_path(args.log)
    expected = None if args.expect_head is None else _head(args.expect_head)
    files = [path] if path.exists() else worker_files(path)
    if len(files) > 1 and expected is not None:
        raise InvalidArgument(
            f"--expect-head: {str(path)!r} is {len(files)} worker files, each with its own "
            "chain: verify one at a time (--log NAME.wN.duckdb --expect-head SEQ:HASH)",
            field="--expect-head",
        )
    code = 0
    for file in files or [path]:
        source = open_audit_log(file)
        try:
            result = verify(source.connection, expected_head=expected)
        finally:
            source.connection.close()
        if result.ok:
            assert result.head is not None
            seq, digest = result.head
            print(f"audit log intact: {result.records} records in {source.description}")
            print(f"head: {seq}:{digest}")
            if result.unchecked_rows:
                print(f"note: {result.unchecked_rows} logged rows predate row digests (written "
                      "by an older version): their records vouch for them unchecked")  # fmt: skip
            continue
        where = (
            "" if result.first_bad_seq is None else f"first bad record seq {result.first_bad_seq}: "
        )
        print(f"audit log NOT intact ({source.description}): {where}{result.problem}",
              file=sys.stderr)  # fmt: skip
        code = 1
    return code


def run_report(args: argparse.Namespace) -> int:
    """``report``: the usage tables on stdout, optionally a PNG and a JSON file."""
    from banditroute.evaluation.logdata import parse_time
    from banditroute.store.reader import open_log
    from banditroute.usage import format_table, plot_usage, usage_report

    path = _log_path(args.log)
    if args.bucket not in BUCKETS:
        raise InvalidArgument(
            f"--bucket: must be one of {', '.join(BUCKETS)}, got {args.bucket!r}",
            field="--bucket",
        )
    since = None if args.since is None else parse_time(args.since, arg="--since")
    until = None if args.until is None else parse_time(args.until, arg="--until")
    if since is not None and until is not None and since >= until:
        raise InvalidArgument(f"--until: {args.until!r} is not after --since", field="--until")
    plot_path, json_path = _output(args.plot, "--plot"), _output(args.json, "--json")
    source = open_log(path)
    try:
        report = usage_report(source.connection, bucket=args.bucket, since=since, until=until)
    finally:
        source.connection.close()
    print(f"usage from {source.description}")
    print(format_table(report), end="")
    if plot_path is not None:
        try:
            plot_usage(report, plot_path)
        except OSError as exc:
            raise InvalidArgument(f"--plot: cannot write {str(plot_path)!r}: {exc}",
                                  field="--plot") from exc  # fmt: skip
        print(f"plot: {plot_path}")
    if json_path is not None:
        try:
            text = json.dumps(report.to_dict(), indent=2, allow_nan=False)
            json_path.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise InvalidArgument(f"--json: cannot write {str(json_path)!r}: {exc}",
                                  field="--json") from exc  # fmt: skip
        print(f"json: {json_path}")
    return 0
