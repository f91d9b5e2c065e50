"""The supervisor's merge round with a worker too busy to answer: the others' learning
updates, budget spend and model outcomes still reach every worker, and the late answer is used
next round; a worker that dies is left out of a round, and a crash loop stops the server."""

from __future__ import annotations

import multiprocessing as mp
import threading
from multiprocessing.connection import Connection
from typing import Any

import pytest

from banditroute.config import Settings, settings_from_mapping
from banditroute.server import workers
from banditroute.server.workers import Supervisor


def _answer(
    conn: Connection, updates: list[Any], spend: dict[str, Any], outcomes: list[Any]
) -> None:
    """A worker's answer to the round's ``updates`` request, put in the pipe ahead (the test
    drives the round from this thread) and checked against the request afterwards."""
    conn.send(("updates", updates, spend, outcomes))


def test_a_silent_worker_does_not_cost_the_others_their_updates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker 1 misses round 1: worker 0's update, spend and outcomes still reach it, worker 0
    gets nothing from it; worker 1's late answer is handed to worker 0 in round 2."""
    monkeypatch.setattr(workers, "ROUND_TIMEOUT_S", 0.3)
    supervisor = Supervisor(settings_from_mapping({"server": {"workers": 2}}))
    pipes = [mp.Pipe() for _ in range(2)]
    supervisor._workers = [(None, parent) for parent, _ in pipes]
    (_, w0), (_, w1) = pipes
    spend0 = {"acme": (0.0, 0.25, 1)}
    outcome0 = ("m", "ERROR", None)
    outcome1 = ("m", "OK", 120.0)

    _answer(w0, ["u0"], spend0, [outcome0])
    assert supervisor.merge_round() is True
    assert w0.recv() == ("updates",)
    assert w0.recv() == ("learn", [], [], [])
    assert w1.recv() == ("updates",)
    assert w1.recv() == ("learn", ["u0"], [spend0], [outcome0])

    w1.send(("updates", ["u1"], {}, [outcome1]))  # round 1's answer, late
    _answer(w0, [], {}, [])
    assert supervisor.merge_round() is True
    assert w0.recv() == ("updates",)
    assert w0.recv() == ("learn", ["u1"], [{}], [outcome1])
    assert w1.recv() == ("updates",)  # round 2's request waits for it
    assert w1.recv() == ("learn", [], [{}], [])
    supervisor._workers = []
    supervisor.stop()


class _DeadProcess:
    """A worker process that has exited (killed)."""

    exitcode = -9

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        return None


def test_a_crash_loop_stops_the_server_instead_of_restarting_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that dies each time it is started is restarted worker_restarts_per_minute
    times; then serve_workers stops the workers and returns 1 (not restart for ever, not hang)."""
    monkeypatch.setattr(workers.signal, "signal", lambda *args: None)
    monkeypatch.setattr(workers, "TICK_S", 0.01)
    spawned: list[int] = []
    stopped: list[bool] = []

    class DyingWorkers(Supervisor):
        def _spawn(self, index: int, settings: Settings | None = None) -> tuple[Any, Connection]:
            spawned.append(index)
            parent, child = mp.Pipe()
            child.close()  # it exits before it is ready
            return _DeadProcess(), parent

        def start(self) -> None:
            self._workers = [self._spawn(0)]

        def stop(self) -> None:
            stopped.append(True)
            self._workers = []
            super().stop()

    monkeypatch.setattr(workers, "Supervisor", DyingWorkers)
    settings = settings_from_mapping(
        {"server": {"workers": 2, "merge_interval_s": 0.01, "worker_restarts_per_minute": 3}}
    )
    assert workers.serve_workers(settings) == 1
    assert spawned == [0, 0, 0, 0]  # the first start and 3 restarts
    assert stopped == [True]


@pytest.mark.parametrize("dies", ["before the request", "after the request"])
def test_a_worker_dying_during_a_round_does_not_break_it(
    monkeypatch: pytest.MonkeyPatch, dies: str
) -> None:
    """A worker whose pipe breaks before the round's request, or while the supervisor waits
    for its answer, is left out of the round (the supervisor restarts it at its next check);
    the round does not raise or hang."""
    monkeypatch.setattr(workers, "ROUND_TIMEOUT_S", 30.0)
    supervisor = Supervisor(settings_from_mapping({"server": {"workers": 2}}))
    parent, child = mp.Pipe()
    if dies == "before the request":
        child.close()
    else:

        def die() -> None:
            child.recv()
            child.close()

        threading.Thread(target=die, daemon=True).start()
    supervisor._workers = [(None, parent)]
    assert supervisor.merge_round() is False
    supervisor._workers = []
    supervisor.stop()


def test_a_replacement_worker_neither_double_counts_nor_misses_spend() -> None:
    """The ledger hands out each worker's reports as they come; after worker 1 is replaced,
    its first report (its whole period read back from its log) is handed on less what the
    others had already been given, and the replacement is given the others' period spend. A
    new period starts the count afresh."""
    ledger = workers.SpendLedger(2)
    assert ledger.handed(0, {"acme": (0.0, 1.0, 2)}) == {"acme": (0.0, 1.0, 2)}
    assert ledger.handed(1, {"acme": (0.0, 0.5, 1)}) == {"acme": (0.0, 0.5, 1)}
    assert ledger.handed(1, {"acme": (0.0, 0.25, 1)}) == {"acme": (0.0, 0.25, 1)}
    ledger.replaced(1)
    assert ledger.others(1) == [{"acme": (0.0, 1.0, 2)}]
    # Its log holds 0.75 USD / 2 requests the others saw, plus 0.5 / 1 it had not reported.
    assert ledger.handed(1, {"acme": (0.0, 1.25, 3), "beta": (0.0, 0.1, 1)}) == {
        "acme": (0.0, 0.5, 1),
        "beta": (0.0, 0.1, 1),
    }
    assert ledger.handed(1, {"acme": (0.0, 0.25, 1)}) == {"acme": (0.0, 0.25, 1)}
    assert ledger.others(0) == [{"acme": (0.0, 1.5, 4), "beta": (0.0, 0.1, 1)}]
    ledger.handed(1, {"acme": (86400.0, 0.125, 1)})
    assert ledger.others(0) == [{"acme": (86400.0, 0.125, 1), "beta": (0.0, 0.1, 1)}]


@pytest.mark.parametrize("log_json", [False, True])
def test_workers_log_as_the_supervisor_was_told(
    monkeypatch: pytest.MonkeyPatch, log_json: bool
) -> None:
    """A worker process is started with the supervisor's log level and --log-json choice
    (workers used to log key=value lines whatever --log-json said)."""
    started: list[tuple[Any, ...]] = []

    class Recorded:
        def __init__(self, *, target: Any, args: tuple[Any, ...], name: str) -> None:
            started.append(args)

        def start(self) -> None:
            """Nothing runs: the test only reads the arguments."""

    settings = settings_from_mapping({"server": {"workers": 2, "port": 0}})
    supervisor = Supervisor(settings, "debug", log_json=log_json)
    monkeypatch.setattr(supervisor._context, "Process", Recorded)
    try:
        supervisor._spawn(0)
    finally:
        supervisor.stop()  # no workers were started: it only removes the socket folder
    assert started[0][-1] == ("debug", log_json)
