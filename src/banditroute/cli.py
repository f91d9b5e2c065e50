"""Command-line entry point: ``banditroute serve | simulate | replay | tune | export | report |
embed-distil`` (and more: see ``banditroute --help``).

Each subcommand parses its arguments, reads settings once (config.py) and drives the same
transport-free Router (or the log it wrote). Argument errors name the argument and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from banditroute.cli_embed import add_parser as add_embed_parser
from banditroute.cli_ops import add_parsers as add_ops_parsers
from banditroute.cli_replay import add_parsers as add_replay_parsers
from banditroute.cli_simulate import add_simulate_parser, run_simulate
from banditroute.config import config_path_from_environment, load_settings
from banditroute.errors import BanditrouteError, ConfigError
from banditroute.logs import configure_logging
from banditroute.tenancy import hash_key


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port: {text!r} is not a number") from None
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"--port: {value} is not in 0..65535")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers: {text!r} is not a number") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"--workers: {value} is not in 1..64")
    return value


def _serve(args: argparse.Namespace) -> int:
    from banditroute.server.app import serve
    from banditroute.server.workers import serve_workers

    settings = load_settings(args.config or config_path_from_environment())
    settings = settings.with_overrides(
        port=args.port, log_path=args.log, workers=args.workers, warm_start=args.warm_start
    )
    if settings.server.workers > 1:
        return serve_workers(settings, args.log_level, log_json=args.log_json)
    return serve(settings)


def _hash_key(args: argparse.Namespace) -> int:
    if not args.key:
        raise ConfigError("key: must not be empty", field="key")
    print(hash_key(args.key))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="banditroute",
        description="Adaptive LLM routing decision service.",
        allow_abbrev=False,
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--log-json", action="store_true", help="log JSON lines")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC routing service")
    serve.add_argument("--config", type=Path, help="TOML settings merged over the defaults")
    serve.add_argument("--port", type=_port, help="port to listen on (0: any free port)")
    serve.add_argument(
        "--log", type=Path,
        help="DuckDB decision log path (the policy snapshot goes beside it unless configured)",
    )  # fmt: skip
    serve.add_argument(
        "--workers", type=_workers, help="serving processes sharing the port (default: config)"
    )
    serve.add_argument(
        "--warm-start",
        type=Path,
        metavar="OUTCOMES.parquet",
        help="learn from this outcome table at start-up when no policy snapshot was restored "
        "(default: the config's policy.warm_start)",
    )
    serve.set_defaults(handler=_serve)

    hash_key = sub.add_parser("hash-key", help="print the SHA-256 digest to configure for a key")
    hash_key.add_argument("key", help="the API key")
    hash_key.set_defaults(handler=_hash_key)

    simulate = add_simulate_parser(sub)
    simulate.set_defaults(handler=run_simulate)
    add_replay_parsers(sub)
    add_ops_parsers(sub)
    add_embed_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, json=args.log_json)
    try:
        code: int = args.handler(args)
    except BanditrouteError as error:
        print(f"banditroute {args.command}: error: {error.message}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
