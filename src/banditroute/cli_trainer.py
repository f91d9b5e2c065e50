"""``banditroute trainer``: the cluster's trainer (one leads, others stand by).

``trainer --cluster URL --config FILE --log CENTRAL.duckdb`` learns every replica's feedback
exactly once, writes the central log (``CENTRAL.r-REPLICA.duckdb`` files beside ``--log``,
which ``replay``, ``report`` and ``tune`` read together given ``--log CENTRAL.duckdb``) and
publishes policy snapshots every ``cluster.snapshot_period_s``; see
:mod:`banditroute.cluster.trainer`. Runs until SIGTERM or Ctrl-C (then commits, gives the
leader lock up at once and exits 0).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from banditroute.config import config_path_from_environment, load_settings
from banditroute.errors import ConfigError

__all__ = ["add_parser", "run_trainer"]

log = structlog.get_logger(__name__)

DEFAULT_CENTRAL = Path("var/central.duckdb")
TRAINER_TIMEOUT_S = 5.0
"""A trainer command's socket timeout: above its blocking stream reads (0.2 s)."""


def add_parser(subparsers: Any) -> None:
    """Add ``trainer`` to ``subparsers`` (from ``add_subparsers``)."""
    parser = subparsers.add_parser(
        "trainer",
        help="run the cluster's trainer (learns every replica's feedback, publishes snapshots)",
        description=(
            "Learn the feedback of every replica sharing the Valkey/Redis server exactly once, "
            "write the central decision log and publish policy snapshots. Start two or more: "
            "one leads (a lock on the server), the others take over when it goes."
        ),
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE.toml",
        help="TOML settings merged over the defaults (the replicas' file)",
    )  # fmt: skip
    parser.add_argument(
        "--cluster", metavar="URL", help="the Valkey/Redis server (default: cluster.url)"
    )
    parser.add_argument(
        "--log", type=Path, metavar="CENTRAL.duckdb", default=DEFAULT_CENTRAL,
        help=f"the central log's name (default: {DEFAULT_CENTRAL}); standbys must reach the "
        "same files",
    )  # fmt: skip
    parser.set_defaults(handler=run_trainer)


def run_trainer(args: argparse.Namespace) -> int:
    """Run the trainer until SIGTERM or SIGINT."""
    from banditroute.cluster.connection import client_errors, make_client
    from banditroute.cluster.events import Keys
    from banditroute.cluster.trainer import Trainer

    settings = load_settings(args.config or config_path_from_environment())
    settings = settings.with_overrides(cluster_url=args.cluster)
    cluster = settings.cluster
    if not cluster.enabled:
        raise ConfigError(
            "--cluster: give the server's URL (or set [cluster] url)", field="--cluster"
        )
    central: Path = args.log
    if central.is_dir() or central.suffix != ".duckdb":
        raise ConfigError(
            f"--log: {str(central)!r} must name the central log's file, NAME.duckdb", field="--log"
        )
    try:
        central.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--log: cannot create {str(central.parent)!r}: {exc.strerror}", field="--log"
        ) from None
    client = make_client(
        cluster.url, timeout_s=TRAINER_TIMEOUT_S, connect_timeout_s=cluster.connect_timeout_s,
        name=f"{cluster.key_prefix}-trainer",
    )  # fmt: skip
    trainer = Trainer(
        settings, args.log, client, Keys(cluster.key_prefix),
        snapshot_period_s=cluster.snapshot_period_s, errors=client_errors(),
    )  # fmt: skip
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    log.info("trainer_started", central=str(args.log), token=trainer.lock.token[:8],
             snapshot_period_s=cluster.snapshot_period_s)  # fmt: skip
    trainer.run(stop)
    client.close()
    log.info("stopped")
    return 0
