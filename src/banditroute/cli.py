"""Command-line entry point: ``banditroute serve | simulate | replay | tune | export | report |
embed-distil`` (and more: see ``banditroute --help``).

Each subcommand parses its arguments, reads settings once (config.py) and drives the same
transport-free Router (or the log it wrote). Argument errors name the argument and exit 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from banditroute.cli_embed import add_parser as add_embed_parser
from banditroute.cli_ops import add_parsers as add_ops_parsers
from banditroute.cli_promote import add_parser as add_promote_parser
from banditroute.cli_replay import add_parsers as add_replay_parsers
from banditroute.cli_simulate import add_simulate_parser, run_simulate
from banditroute.cli_trainer import add_parser as add_trainer_parser
from banditroute.config import (
    LogSettings,
    ServerSettings,
    config_path_from_environment,
    load_settings,
)
from banditroute.errors import BanditrouteError, ConfigError
from banditroute.tenancy import hash_key


def _port_number(text: str, flag: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag}: {text!r} is not a number") from None
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"{flag}: {value} is not in 0..65535")
    return value


_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _host(text: str, flag: str = "--host") -> str:
    """An IP address (IPv6 with or without brackets) or a host name, as gRPC's address wants."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        if bare is text and _HOST_NAME.match(text):
            return text
        raise argparse.ArgumentTypeError(
            f"{flag}: {text[:64]!r} is not an IP address or host name"
        ) from None
    return f"[{address}]" if address.version == 6 else str(address)


def _port(text: str) -> int:
    return _port_number(text, "--port")


def _metrics_port(text: str) -> int:
    return _port_number(text, "--metrics-port")


def _metrics_host(text: str) -> str:
    return _host(text, "--metrics-host")


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
        host=args.host,
        port=args.port,
        log_path=args.log,
        workers=args.workers,
        warm_start=args.warm_start,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        cluster_url=args.cluster,
    )
    if settings.server.workers > 1:
        return serve_workers(settings, args.log_level, log_json=args.log_json)
    return serve(settings)


MAX_KEY_CHARS = 4096
"""Longest API key ``hash-key`` accepts (gRPC bounds request headers at 16 KiB anyway)."""


def _read_key() -> str:
    """The key from standard input: typed without echo at a terminal, else its first line."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("API key: ")
    line = sys.stdin.readline(MAX_KEY_CHARS + 2)
    return line.removesuffix("\n").removesuffix("\r")


def _hash_key(args: argparse.Namespace) -> int:
    key: str = _read_key() if args.key == "-" else args.key
    if not key:
        raise ConfigError("key: must not be empty", field="key")
    if len(key) > MAX_KEY_CHARS:
        raise ConfigError(f"key: longer than {MAX_KEY_CHARS} characters", field="key")
    print(hash_key(key))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="banditroute",
        description="Adaptive LLM routing decision service.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning"],
        help="least severe log line written (default: info)",
    )
    parser.add_argument("--log-json", action="store_true", help="log JSON lines")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the gRPC routing service",
        description=(
            "Serve the RouterService gRPC API (with the standard health and reflection "
            "services) until SIGTERM or Ctrl-C; SIGHUP reloads the config file. Options left "
            "out take their value from the config file (--config, else $BANDITROUTE_CONFIG, "
            "else the embedded defaults); the defaults shown are the embedded ones."
        ),
    )
    serve.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        help="TOML settings merged over the embedded defaults "
        "(default: $BANDITROUTE_CONFIG, else none)",
    )
    serve.add_argument(
        "--host",
        type=_host,
        help="address to listen on: 0.0.0.0 or [::] for every interface (then set up TLS "
        f"and API keys) (default: the config's server.host, {ServerSettings.host})",
    )
    serve.add_argument(
        "--port",
        type=_port,
        help="port to listen on, 0 for any free port "
        f"(default: the config's server.port, {ServerSettings.port})",
    )
    serve.add_argument(
        "--log",
        type=Path,
        metavar="PATH",
        help="DuckDB decision log; the policy snapshot and prompt hash key go beside it unless "
        f"configured (default: the config's log.path, {LogSettings.path})",
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        help="serving processes sharing the port, 1..64 "
        f"(default: the config's server.workers, {ServerSettings.workers})",
    )
    serve.add_argument(
        "--metrics-port",
        type=_metrics_port,
        help="serve Prometheus metrics at http://HOST:PORT/metrics, 0 for none (default: the "
        f"config's server.metrics_port, {ServerSettings.metrics_port})",
    )
    serve.add_argument(
        "--metrics-host",
        type=_metrics_host,
        help="address the metrics endpoint listens on; it has no authentication and shows "
        "tenants' spend (default: the config's server.metrics_host, "
        f"{ServerSettings.metrics_host}, whatever --host is)",
    )
    serve.add_argument(
        "--warm-start",
        type=Path,
        metavar="OUTCOMES.parquet",
        help="learn from this outcome table at start-up when no policy snapshot was restored "
        "(default: the config's policy.warm_start, none)",
    )
    serve.add_argument(
        "--cluster",
        metavar="URL",
        help="join the replicas sharing this Valkey/Redis server, redis://HOST:PORT/DB "
        "(default: the config's cluster.url; needs banditroute[cluster])",
    )
    serve.set_defaults(handler=_serve)

    hash_key = sub.add_parser(
        "hash-key",
        help="print the SHA-256 digest to configure for a key",
        description=(
            "Print the SHA-256 hex digest of an API key, the value to list under [[tenants]] "
            "api_key_sha256 or [auth] admin_key_sha256 (the config never holds the key itself). "
            "Without a key argument, or with '-', the key is read from standard input (one "
            "line; the trailing newline is dropped), which keeps it out of the shell history."
        ),
    )
    hash_key.add_argument(
        "key", nargs="?", default="-", help="the API key, or - to read it from stdin (default: -)"
    )
    hash_key.set_defaults(handler=_hash_key)
    add_trainer_parser(sub)

    simulate = add_simulate_parser(sub)
    simulate.set_defaults(handler=run_simulate)
    add_replay_parsers(sub)
    add_ops_parsers(sub)
    add_promote_parser(sub)
    add_embed_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from banditroute.logs import configure_logging  # structlog: not needed for --help

    configure_logging(args.log_level, json=args.log_json)
    try:
        code: int = args.handler(args)
    except BanditrouteError as error:
        print(f"banditroute {args.command}: error: {error.message}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
