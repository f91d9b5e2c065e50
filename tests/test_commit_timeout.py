"""How long Feedback waits for its log commit: one setting, ``store.base.COMMIT_TIMEOUT_S``,
read by both Feedback paths (the owner's join and a cluster replica's feedback for the
trainer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from banditroute.cluster import replica_tag
from banditroute.cluster.learning import ShippingLog
from banditroute.cluster.orphans import FeedbackForTrainer
from banditroute.cluster.outbox import Outbox
from banditroute.config import load_settings
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.errors import Unavailable
from banditroute.policies.uniform import UniformPolicy
from banditroute.router import DecisionIds, Router
from banditroute.store.base import Commit
from banditroute.store.memory import MemoryLog
from banditroute.store.records import FeedbackRecord


class StalledCommit(Commit):
    """A commit that never completes, noting each timeout it was waited on with."""

    def __init__(self) -> None:
        super().__init__()
        self.waited: list[float | None] = []

    def wait(self, timeout: float | None = None) -> None:
        self.waited.append(timeout)
        raise TimeoutError("the log did not commit in time")


class StalledLog(MemoryLog):
    """A memory log whose feedback rows never become durable."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[StalledCommit] = []

    def append_feedback(self, record: FeedbackRecord) -> Commit:
        super().append_feedback(record)
        self.commits.append(StalledCommit())
        return self.commits[-1]


def test_both_feedback_paths_wait_as_long_as_the_one_commit_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``log.sync_feedback``, the owner's Feedback and the feedback a replica accepts for
    the trainer each wait for their commit for ``banditroute.store.base.COMMIT_TIMEOUT_S`` as
    it is at the call (patching it changes both), then answer Unavailable."""
    monkeypatch.setattr("banditroute.store.base.COMMIT_TIMEOUT_S", 1.25)
    settings = load_settings()
    assert settings.log.sync_feedback
    stalled = StalledLog()
    outbox = Outbox(tmp_path / "outbox", "b")
    log = ShippingLog(stalled, outbox)
    router = Router(settings, UniformPolicy(), log, new_id=DecisionIds(prefix=replica_tag("b")))
    try:
        own = router.route(RouteQuery(prompt="Hi there")).decision_id
        with pytest.raises(Unavailable):
            router.feedback(FeedbackReport(own, quality=1.0))
        gone = replica_tag("a") + "0" * 24
        with pytest.raises(Unavailable):
            FeedbackForTrainer(router, log).accept(FeedbackReport(gone, quality=0.5))
    finally:
        outbox.close()
    assert [commit.waited[-1] for commit in stalled.commits] == [1.25, 1.25]
