"""One promotion or rollback at a time in a multi-worker server, whichever workers the
clients called: the guard is a lock file in the workers' private folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from banditroute.errors import FailedPrecondition
from banditroute.server.worker_policy import WorkerPolicy


def _worker(rundir: Path) -> WorkerPolicy:
    """A worker's promotion desk; the guard needs neither its router nor its peers."""
    return WorkerPolicy(cast(Any, None), cast(Any, None), rundir, [])


def test_a_change_under_way_on_one_worker_refuses_one_on_another(tmp_path: Path) -> None:
    """While worker 0 makes a promotion, a promotion or rollback asked of worker 1 (another
    process in a real server: another open of the same lock file here) is refused
    FAILED_PRECONDITION naming policy; once worker 0 is done, worker 1's goes ahead."""
    first, second = _worker(tmp_path), _worker(tmp_path)
    with first.exclusive():
        with pytest.raises(FailedPrecondition) as refused, second.exclusive():
            pass
        assert refused.value.field == "policy"
    with second.exclusive():
        pass


def test_a_second_change_on_the_same_worker_is_refused(tmp_path: Path) -> None:
    """Two changes asked of one worker at once: the second is refused, and the worker takes
    a change again afterwards."""
    worker = _worker(tmp_path)
    with worker.exclusive(), pytest.raises(FailedPrecondition), worker.exclusive():
        pass
    with worker.exclusive():
        pass
