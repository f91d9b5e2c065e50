"""The supervisor's merge round with a worker too busy to answer: the others' learning
updates, budget spend and model outcomes still reach every worker, and the late answer is used
next round; a worker that died stops the server."""

from __future__ import annotations

import multiprocessing as mp
import threading
from multiprocessing.connection import Connection
from typing import Any

import pytest

from banditroute.config import settings_from_mapping
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


@pytest.mark.parametrize("dies", ["before the request", "after the request"])
def test_a_dead_worker_stops_the_server_instead_of_hanging_it(
    monkeypatch: pytest.MonkeyPatch, dies: str
) -> None:
    """A worker that died (its pipe broken before the round's request, or closed while the
    supervisor waits for its answer) makes serve_workers stop the other workers and return 1,
    not raise out of the loop and leave them serving behind a supervisor stuck joining them."""
    monkeypatch.setattr(workers.signal, "signal", lambda *args: None)
    stopped: list[bool] = []

    class DeadWorker(Supervisor):
        def start(self) -> None:
            parent, child = mp.Pipe()
            if dies == "before the request":
                child.close()
            else:

                def die() -> None:
                    child.recv()
                    child.close()

                threading.Thread(target=die, daemon=True).start()
            self._workers = [(None, parent)]

        def stop(self) -> None:
            stopped.append(True)
            self._workers = []
            super().stop()

    monkeypatch.setattr(workers, "Supervisor", DeadWorker)
    settings = settings_from_mapping({"server": {"workers": 2, "merge_interval_s": 0.01}})
    assert workers.serve_workers(settings) == 1
    assert stopped == [True]
