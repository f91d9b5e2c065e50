"""Several serving processes on one port: a supervisor, its workers and their model merging.

The supervisor picks the port, starts ``server.workers`` worker processes (each a complete
service bound with SO_REUSEPORT, with its own learner and log file), and every
``merge_interval_s`` runs one merge round: it collects the learning updates each worker made
since the last round (``SharedLearning``), the budget spend and the model outcomes (status and
latency) each recorded, and hands every worker the others', so every process learns from all
feedback, whatever the policy kind, and judges each model's health on all of it. Feedback
that reaches a worker which did not make the decision is forwarded to the owner over a private
Unix socket, and GetStats and ResetModelHealth ask every worker over those sockets (see
``WorkerPeers``). On SIGTERM the supervisor stops the workers (each shuts down gracefully)
and exits 0; when a worker dies, it stops the others and exits 1.
Merging VW weight deltas instead (``simulations/vw_delta_merging.py``) was measured worse than
not merging at all; see benchmarks/README.md.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import signal
import socket
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import structlog

from banditroute.config import Settings
from banditroute.errors import BanditrouteError, ConfigError
from banditroute.health import SharedOutcome
from banditroute.logs import configure_logging
from banditroute.policies.sharing import SharedLearning, SharedUpdate
from banditroute.server.app import WorkerIdentity, build_service, worker_log_path

log = structlog.get_logger(__name__)

READY_TIMEOUT_S = 120.0
ROUND_TIMEOUT_S = 30.0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _worker_main(
    settings: Settings, identity: WorkerIdentity, conn: Connection, stop: Any, log_level: str
) -> None:
    """Entry point of one worker process."""
    configure_logging(log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        service = build_service(settings, identity)
    except BanditrouteError as error:  # a start-up failure the supervisor reports in one line
        conn.send(("failed", error.message))
        return
    health = service.router.health
    health.share_outcomes()
    service.start()
    policy = service.router.policy
    conn.send(("ready", service.port, service.restored_pending))
    while not stop.is_set():
        if not conn.poll(0.2):
            continue
        message = conn.recv()
        if message[0] == "updates":
            updates = policy.take_updates() if isinstance(policy, SharedLearning) else []
            spend = service.router.take_budget_spend()
            conn.send(("updates", updates, spend, health.take_outcomes()))
        elif message[0] == "learn":
            if isinstance(policy, SharedLearning):
                with service.router.locked():
                    learned = policy.learn_shared(message[1], service.router.catalog)
                log.debug("shared_updates_learned", updates=learned)
            for spend in message[2]:
                service.router.add_budget_spend(spend)
            health.add_outcomes(message[3])
    service.stop()
    conn.send(("stopped",))


class _Reply(NamedTuple):
    """What one worker answers a merge round."""

    updates: list[SharedUpdate]
    spend: dict[str, tuple[float, float, int]]
    outcomes: list[SharedOutcome]


class Supervisor:
    """Starts the workers, runs merge rounds, and stops everything on a signal."""

    def __init__(self, settings: Settings, log_level: str = "info") -> None:
        self.settings = settings
        self.log_level = log_level
        self.port = settings.server.port or _free_port(settings.server.host)
        self.rundir = Path(tempfile.mkdtemp(prefix="banditroute-workers-"))
        self._context = mp.get_context("spawn")
        self._stop = self._context.Event()
        self._workers: list[tuple[Any, Connection]] = []

    def start(self) -> None:
        """Start every worker and wait until all listen."""
        count = self.settings.server.workers
        worker_settings = self.settings.with_overrides(port=self.port)
        for index in range(count):
            parent, child = self._context.Pipe()
            identity = WorkerIdentity(index, count, self.rundir)
            process = self._context.Process(
                target=_worker_main,
                args=(worker_settings, identity, child, self._stop, self.log_level),
                name=f"banditroute-worker-{index}",
            )
            process.start()
            self._workers.append((process, parent))
        for index, (_, conn) in enumerate(self._workers):
            if not conn.poll(READY_TIMEOUT_S):
                raise RuntimeError(f"worker {index} did not start within {READY_TIMEOUT_S:g}s")
            try:
                message = conn.recv()
            except EOFError:
                message = ("failed", "it exited before it was ready (see its log above)")
            if message[0] != "ready":
                raise ConfigError(f"worker {index}: {message[1]}", field="server.workers")

    def merge_round(self) -> bool:
        """One round: collect every worker's new learning updates, budget spend and model
        outcomes, and give each worker the others'. True if any worker had updates.

        Budgets and model health are kept per process, so without the exchange a tenant's hard
        cap would hold per process (N times the limit for the server) and each process would
        trip a failing model's breaker on its own failures only; with it, a process sees the
        others' spend and outcomes at most one round (``merge_interval_s``) late."""
        for _, conn in self._workers:
            conn.send(("updates",))
        deadline = time.monotonic() + ROUND_TIMEOUT_S
        replies: dict[int, _Reply] = {}
        for index, (_, conn) in enumerate(self._workers):
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                # A worker too busy to answer this round answers in the next one (its reply
                # waits in the pipe); the others' updates and spend are handed out regardless.
                log.error("merge_round_timeout", worker=index)
                continue
            _, updates, spend, outcomes = conn.recv()
            replies[index] = _Reply(updates, spend, outcomes)
        for me, (_, conn) in enumerate(self._workers):
            others = [r for index, r in replies.items() if index != me]
            conn.send((
                "learn",
                [update for reply in others for update in reply.updates],
                [reply.spend for reply in others],
                [outcome for reply in others for outcome in reply.outcomes],
            ))  # fmt: skip
        return any(reply.updates for reply in replies.values())

    def stop(self) -> None:
        """Stop the workers gracefully and remove the socket folder."""
        self._stop.set()
        for index, (process, _) in enumerate(self._workers):
            process.join(self.settings.server.grace_s + 30)
            if process.is_alive():
                log.error("worker_kill", worker=index)
                process.kill()
        shutil.rmtree(self.rundir, ignore_errors=True)


def serve_workers(settings: Settings, log_level: str = "info") -> int:
    """Run ``server.workers`` processes on one port until SIGTERM or SIGINT."""
    supervisor = Supervisor(settings, log_level)
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        supervisor.start()
    except (ConfigError, RuntimeError):
        supervisor.stop()  # the workers that did start
        raise
    logs = [str(worker_log_path(settings.log.path, i)) for i in range(settings.server.workers)]
    log.info(
        "listening",
        address=f"{settings.server.host}:{supervisor.port}",
        workers=settings.server.workers,
        logs=logs,
        merge_interval_s=settings.server.merge_interval_s,
    )
    code = 0
    try:
        while not done.wait(settings.server.merge_interval_s):
            if supervisor.merge_round():
                log.debug("models_merged", workers=settings.server.workers)
    except (EOFError, OSError) as exc:
        # A worker died (its pipe broke): stop the others and exit non-zero, rather than
        # leave them serving behind a supervisor that would wait for them for ever.
        log.error("worker_lost", error=repr(exc))
        code = 1
    finally:
        log.info("shutting_down", workers=settings.server.workers)
        supervisor.stop()
    log.info("stopped")
    return code


__all__ = ["Supervisor", "serve_workers"]
