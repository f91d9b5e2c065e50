"""Commit: the completion handle a feedback's caller waits on before acknowledging."""

from __future__ import annotations

import threading

import pytest

from banditroute.store.base import COMMITTED, Commit


def test_wait_returns_once_done() -> None:
    """wait() returns after done() is called, even from another thread."""
    commit = Commit()
    threading.Timer(0.02, commit.done).start()
    commit.wait(5.0)


def test_wait_raises_the_write_error() -> None:
    """A commit completed with an error re-raises it to the waiter."""
    commit = Commit()
    commit.done(OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        commit.wait(1.0)


def test_wait_times_out() -> None:
    """A commit that never completes raises TimeoutError after the timeout."""
    with pytest.raises(TimeoutError):
        Commit().wait(0.01)


def test_committed_is_already_done() -> None:
    """The shared COMMITTED handle never blocks."""
    COMMITTED.wait(0.0)
