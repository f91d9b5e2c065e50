"""Several serving processes on one port: a supervisor, its workers and their model merging.

The supervisor picks the port, starts ``server.workers`` worker processes (each a complete
service bound with SO_REUSEPORT, with its own learner and log file), and every
``merge_interval_s`` runs one merge round: it collects the learning updates each worker made
since the last round (``SharedLearning``), the budget spend and the model outcomes (status and
latency) each recorded, and hands every worker the others', so every process learns from all
feedback, whatever the policy kind, and judges each model's health on all of it. Feedback
that reaches a worker which did not make the decision is forwarded to the owner over a private
Unix socket, and GetStats and ResetModelHealth ask every worker over those sockets (see
``WorkerPeers``). The supervisor forwards SIGHUP to every worker, each of which then reads
the configuration file again and applies it (see :mod:`banditroute.reload`); ReloadConfig
reaches one worker, which reloads and asks the others to; PromotePolicy and RollbackPolicy
likewise (``worker_policy``: the updates of a merge round are learned only by a worker serving
the policy that made them). On SIGTERM the supervisor stops the
workers (each shuts down gracefully) and exits 0. When a worker dies (kill -9, a crash), the
supervisor starts a replacement with the same index, which opens the same log file (moving the
dead worker's journal in), reads the configuration file as it is then (keeping the settings in
force if the file is invalid or changes what only a restart can) and restores its pending
decisions from the log, as a restarted single server does, so feedback for the dead worker's
decisions is answered again; the other workers keep serving meanwhile. At most
``server.worker_restarts_per_minute`` restarts in any 60 s: past that (a crash loop) it stops
every worker and exits 1.
Merging VW weight deltas instead (``simulations/vw_delta_merging.py``) was measured worse than
not merging at all; see benchmarks/README.md.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import structlog

from banditroute.catalog_checks import warn_unserved_data_classes
from banditroute.config import Settings, reread_settings
from banditroute.errors import BanditrouteError, ConfigError
from banditroute.health import SharedOutcome
from banditroute.logs import configure_logging
from banditroute.policies.sharing import SharedLearning, SharedUpdate
from banditroute.reload import config_change
from banditroute.server.app import (
    WorkerIdentity,
    build_service,
    reload_on_signal,
    worker_log_path,
)
from banditroute.server.metrics import (
    WSGIServer,
    metrics_port,
    multiprocess_registry,
    serve_metrics,
    stop_metrics,
    worker_exited,
)

log = structlog.get_logger(__name__)

READY_TIMEOUT_S = 120.0
ROUND_TIMEOUT_S = 30.0
TICK_S = 0.5
"""How often the supervisor checks for a signal and for dead workers."""
RESTART_WINDOW_S = 60.0
"""The window ``server.worker_restarts_per_minute`` counts restarts over."""


class WorkersLost(RuntimeError):
    """Workers died faster than the supervisor may restart them (a crash loop)."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _worker_main(
    settings: Settings,
    identity: WorkerIdentity,
    conn: Connection,
    stop: Any,
    logging: tuple[str, bool],
) -> None:
    """Entry point of one worker process; ``logging`` is the supervisor's (level, JSON lines)."""
    log_level, log_json = logging
    configure_logging(log_level, json=log_json)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    hangups = threading.Event()
    signal.signal(signal.SIGHUP, lambda signum, frame: hangups.set())
    # The supervisor started this process with SIGHUP blocked (see Supervisor._spawn): one
    # sent before the handler above was in place is delivered now instead of ending it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    try:
        service = build_service(settings, identity)
    except BanditrouteError as error:  # a start-up failure the supervisor reports in one line
        conn.send(("failed", error.message))
        return
    health = service.router.health
    health.share_outcomes()
    service.start()
    metrics = service.metrics
    conn.send(("ready", service.port, service.restored_pending))
    while not stop.is_set():
        if metrics is not None:
            metrics.refresh()  # the supervisor serves what the workers last wrote
        if hangups.is_set():
            hangups.clear()
            reload_on_signal(service.router)
        if not conn.poll(0.2):
            continue
        message = conn.recv()
        policy = service.router.policy  # read each time: a promotion replaces it
        if message[0] == "updates":
            updates = policy.take_updates() if isinstance(policy, SharedLearning) else []
            spend = service.router.take_budget_spend()
            conn.send(("updates", updates, spend, health.take_outcomes()))
        elif message[0] == "learn":
            with service.router.locked():  # the policy served now, not one a promotion replaced
                policy = service.router.policy
                if isinstance(policy, SharedLearning):
                    learned = policy.learn_shared(message[1], service.router.catalog)
                    log.debug("shared_updates_learned", updates=learned)
            for spend in message[2]:
                service.router.add_budget_spend(spend)
            health.add_outcomes(message[3])
    service.stop()
    conn.send(("stopped",))


Spend = dict[str, tuple[float, float, int]]
"""A worker's budget spend by tenant: (period start, USD, requests), as ``take_budget_spend``."""


class SpendLedger:
    """What each worker's spend the others have been handed in the current period, so that a
    replacement worker neither double-counts nor misses any.

    A replacement reads back its whole period's spend from its log and reports it as new in
    its first round; the others have already counted most of it, so :meth:`handed` passes on
    only the part they have not seen. And it knows nothing of the others' spend, so
    :meth:`others` is what it is given on start."""

    def __init__(self, workers: int) -> None:
        self._handed: list[Spend] = [{} for _ in range(workers)]
        self._retally: set[int] = set()

    def replaced(self, index: int) -> None:
        """Worker ``index`` was replaced: its next report is a whole-period tally."""
        self._retally.add(index)

    def others(self, index: int) -> list[Spend]:
        """The spend of every worker but ``index`` handed out so far this period."""
        return [dict(spend) for other, spend in enumerate(self._handed) if other != index]

    def handed(self, index: int, spend: Spend) -> Spend:
        """The part of worker ``index``'s report to hand the others (all of it, except after a
        replacement), counted as handed out."""
        handed = self._handed[index]
        if index in self._retally:
            self._retally.discard(index)
            spend = {tenant: _minus(entry, handed.get(tenant)) for tenant, entry in spend.items()}
        for tenant, (start, usd, requests) in spend.items():
            before = handed.get(tenant)
            if before is not None and before[0] == start:
                handed[tenant] = (start, before[1] + usd, before[2] + requests)
            elif before is None or start > before[0]:
                handed[tenant] = (start, usd, requests)
        return spend


def _minus(
    entry: tuple[float, float, int], seen: tuple[float, float, int] | None
) -> tuple[float, float, int]:
    """``entry`` less what was ``seen`` of the same period (never below zero)."""
    start, usd, requests = entry
    if seen is None or seen[0] != start:
        return entry
    return start, max(0.0, usd - seen[1]), max(0, requests - seen[2])


class _Reply(NamedTuple):
    """What one worker answers a merge round."""

    updates: list[SharedUpdate]
    spend: Spend
    outcomes: list[SharedOutcome]


class Supervisor:
    """Starts the workers, runs merge rounds, and stops everything on a signal."""

    def __init__(
        self,
        settings: Settings,
        log_level: str = "info",
        *,
        log_json: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.log_level = log_level
        self.log_json = log_json
        self.port = settings.server.port or _free_port(settings.server.host)
        self.rundir = Path(tempfile.mkdtemp(prefix="banditroute-workers-"))
        self._context = mp.get_context("spawn")
        self._stop = self._context.Event()
        self._workers: list[tuple[Any, Connection]] = []
        self._clock = clock
        self._restarts: deque[float] = deque()
        self._ledger = SpendLedger(settings.server.workers)
        self.restarted = 0
        self.metrics_dir: Path | None = None
        self._metrics_server: WSGIServer | None = None
        if settings.server.metrics_port:
            self.metrics_dir = self.rundir / "metrics"
            self.metrics_dir.mkdir()

    def _spawn(self, index: int, settings: Settings | None = None) -> tuple[Any, Connection]:
        count = self.settings.server.workers
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main,
            args=(
                (settings or self.settings).with_overrides(port=self.port),
                WorkerIdentity(index, count, self.rundir, self.metrics_dir),
                child,
                self._stop,
                (self.log_level, self.log_json),
            ),
            name=f"banditroute-worker-{index}",
        )
        # SIGHUP stays blocked in the new process until its handler is in place (SIGHUP's
        # default action would end it): the signal mask is inherited across fork and exec.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child.close()  # the worker's end: the parent's recv sees EOF once the worker is gone
        return process, parent

    def _await_ready(self, index: int) -> int:
        """Wait until worker ``index`` listens; returns the pending decisions it restored.
        ConfigError (one line naming the worker) if it fails or exits first."""
        conn = self._workers[index][1]
        if not conn.poll(READY_TIMEOUT_S):
            raise RuntimeError(f"worker {index} did not start within {READY_TIMEOUT_S:g}s")
        try:
            message = conn.recv()
        except EOFError:
            message = ("failed", "it exited before it was ready (see its log above)")
        if message[0] != "ready":
            raise ConfigError(f"worker {index}: {message[1]}", field="server.workers")
        return int(message[2])

    @property
    def metrics_address(self) -> str | None:
        """host:port of the metrics endpoint (every worker's figures), if configured."""
        if self._metrics_server is None:
            return None
        return f"{self.settings.server.metrics_address}:{metrics_port(self._metrics_server)}"

    def start(self) -> None:
        """Start the metrics endpoint (if configured) and every worker, and wait until all
        listen."""
        if self.metrics_dir is not None:
            self._metrics_server = serve_metrics(
                multiprocess_registry(self.metrics_dir),
                self.settings.server.metrics_address,
                self.settings.server.metrics_port,
            )
        self._workers = [self._spawn(index) for index in range(self.settings.server.workers)]
        for index in range(len(self._workers)):
            self._await_ready(index)

    def lost(self) -> list[int]:
        """The indexes of workers that are no longer running."""
        return [index for index, (process, _) in enumerate(self._workers) if not process.is_alive()]

    def restart(self, index: int) -> None:
        """Replace dead worker ``index`` with a new process of the same index (its log, its
        socket, its pending decisions). WorkersLost when that would exceed
        ``worker_restarts_per_minute`` restarts in the last minute."""
        process, conn = self._workers[index]
        process.join(0)
        now = self._clock()
        while self._restarts and self._restarts[0] <= now - RESTART_WINDOW_S:
            self._restarts.popleft()
        limit = self.settings.server.worker_restarts_per_minute
        if len(self._restarts) >= limit:
            raise WorkersLost(
                f"worker {index} exited (code {process.exitcode}) after {len(self._restarts)} "
                f"restart(s) in the last {RESTART_WINDOW_S:g}s (limit {limit})"
            )
        self._restarts.append(now)
        log.error("worker_lost", worker=index, exitcode=process.exitcode)
        conn.close()
        if self.metrics_dir is not None and process.pid is not None:
            worker_exited(self.metrics_dir, process.pid)
        self._workers[index] = self._spawn(index, self.restart_settings())
        try:
            pending = self._await_ready(index)
        except (ConfigError, RuntimeError) as exc:
            log.error("worker_restart_failed", worker=index, error=str(exc))
            return  # still dead: the next check restarts it again, within the limit
        self._ledger.replaced(index)
        with contextlib.suppress(OSError):  # the others' spend so far, for its budgets
            self._workers[index][1].send(("learn", [], self._ledger.others(index), []))
        self.restarted += 1
        log.info("worker_restarted", worker=index, pending_restored=pending)

    def restart_settings(self) -> Settings:
        """What a replacement worker starts with: the configuration file as it reads now, as
        for a restarted server, unless it is invalid or changes what only a restart can (then
        the settings the supervisor started with)."""
        try:
            fresh = reread_settings(self.settings)
            config_change(self.settings, fresh)
        except BanditrouteError as error:
            log.warning("worker_config_kept", reason=error.message)
            return self.settings
        return fresh

    def forward_hangup(self) -> None:
        """Pass a SIGHUP on to every running worker (each reloads its configuration)."""
        for index, (process, _) in enumerate(self._workers):
            if process.pid is not None and process.is_alive():
                try:
                    os.kill(process.pid, signal.SIGHUP)
                except ProcessLookupError:
                    log.warning("worker_gone", worker=index)

    def merge_round(self) -> bool:
        """One round: collect every worker's new learning updates, budget spend and model
        outcomes, and give each worker the others'. True if any worker had updates.

        Budgets and model health are kept per process, so without the exchange a tenant's hard
        cap would hold per process (N times the limit for the server) and each process would
        trip a failing model's breaker on its own failures only; with it, a process sees the
        others' spend and outcomes at most one round (``merge_interval_s``) late."""
        asked = []
        for index, (_, conn) in enumerate(self._workers):
            with contextlib.suppress(OSError):  # a dead worker: restarted at the next check
                conn.send(("updates",))
                asked.append(index)
        deadline = time.monotonic() + ROUND_TIMEOUT_S
        replies: dict[int, _Reply] = {}
        for index in asked:
            conn = self._workers[index][1]
            try:
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    # A worker too busy to answer this round answers in the next one (its
                    # reply waits in the pipe); the others' updates are handed out regardless.
                    log.error("merge_round_timeout", worker=index)
                    continue
                _, updates, spend, outcomes = conn.recv()
            except (EOFError, OSError):
                continue  # it died during the round
            replies[index] = _Reply(updates, self._ledger.handed(index, spend), outcomes)
        for me, (_, conn) in enumerate(self._workers):
            others = [r for index, r in replies.items() if index != me]
            with contextlib.suppress(OSError):
                conn.send((
                    "learn",
                    [update for reply in others for update in reply.updates],
                    [reply.spend for reply in others],
                    [outcome for reply in others for outcome in reply.outcomes],
                ))  # fmt: skip
        return any(reply.updates for reply in replies.values())

    def stop(self) -> None:
        """Stop the workers gracefully and the metrics endpoint, and remove the socket folder."""
        self._stop.set()
        stop_metrics(self._metrics_server)
        for index, (process, _) in enumerate(self._workers):
            process.join(self.settings.server.grace_s + 30)
            if process.is_alive():
                log.error("worker_kill", worker=index)
                process.kill()
        shutil.rmtree(self.rundir, ignore_errors=True)


def serve_workers(settings: Settings, log_level: str = "info", *, log_json: bool = False) -> int:
    """Run ``server.workers`` processes on one port until SIGTERM or SIGINT; the workers log
    at ``log_level`` and as JSON lines when ``log_json`` (``--log-json``), as the supervisor."""
    supervisor = Supervisor(settings, log_level, log_json=log_json)
    done = threading.Event()
    hangups = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, lambda signum, frame: hangups.set())
    try:
        supervisor.start()
    except (ConfigError, RuntimeError):
        supervisor.stop()  # the workers that did start
        raise
    logs = [str(worker_log_path(settings.log.path, i)) for i in range(settings.server.workers)]
    warn_unserved_data_classes(settings.catalog)
    log.info(
        "listening",
        address=f"{settings.server.host}:{supervisor.port}",
        metrics=supervisor.metrics_address,
        workers=settings.server.workers,
        logs=logs,
        merge_interval_s=settings.server.merge_interval_s,
    )
    code = 0
    next_round = time.monotonic() + settings.server.merge_interval_s
    try:
        while not done.wait(TICK_S):
            for index in supervisor.lost():
                supervisor.restart(index)
            if hangups.is_set():
                hangups.clear()
                log.info("signal", signal="SIGHUP", workers=settings.server.workers)
                supervisor.forward_hangup()
            if time.monotonic() >= next_round:
                next_round = time.monotonic() + settings.server.merge_interval_s
                if supervisor.merge_round():
                    log.debug("models_merged", workers=settings.server.workers)
    except WorkersLost as exc:
        # A crash loop: stop the others and exit non-zero, rather than restart for ever.
        log.error("workers_given_up", error=str(exc))
        code = 1
    finally:
        log.info("shutting_down", workers=settings.server.workers)
        supervisor.stop()
    log.info("stopped")
    return code


__all__ = ["Supervisor", "serve_workers"]
