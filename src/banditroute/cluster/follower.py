"""The replica's side of the learning loop: pull the trainer's snapshot and swap it in.

A background thread listens on the snapshot channel and, at the latest every
``snapshot_period_s``, asks for the published version; when it is newer than the one in use it
fetches the snapshot, checks its checksum (a damaged one is refused with a log line and the
replica keeps what it has), builds a fresh learner from it off the router's lock (of the
snapshot's recipe, after a promotion: :mod:`banditroute.cluster.recipes`), re-learns
this replica's own updates the snapshot does not hold yet (numbered after the snapshot's mark
for this replica's source, :class:`LocalUpdates`), and swaps it in under the lock: Route
never waits on the network, and each decision carries the version of the learner that made it.
When the trainer is down the replica keeps its last snapshot (and keeps learning its own
feedback); ``age_s`` says how old the snapshot in use is.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import structlog

from banditroute.catalog import Catalog
from banditroute.cluster.events import Keys
from banditroute.errors import BanditrouteError
from banditroute.policies.base import Policy
from banditroute.policies.costaware import CostAwarePolicy
from banditroute.policies.sharing import SharedUpdate, learn_update
from banditroute.snapshots import parse_snapshot

log = structlog.get_logger(__name__)

MAX_LOCAL_UPDATES = 200_000
"""Own updates kept for re-learning on a new snapshot; past it the oldest are dropped (the
trainer still learns them; a swap before it does just lacks them for one period)."""


class LocalUpdates:
    """This replica's learning updates with their outbox numbers, until a snapshot holds them."""

    def __init__(self, limit: int = MAX_LOCAL_UPDATES) -> None:
        self._updates: deque[tuple[int, SharedUpdate]] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def add(self, seq: int, update: SharedUpdate) -> None:
        with self._lock:
            self._updates.append((seq, update))

    def forget(self, seq: int) -> None:
        """Drop the updates numbered up to ``seq`` (a snapshot holds them)."""
        with self._lock:
            while self._updates and self._updates[0][0] <= seq:
                self._updates.popleft()

    def after(self, seq: int) -> list[tuple[int, SharedUpdate]]:
        """The updates numbered after ``seq``, oldest first."""
        with self._lock:
            return [(n, update) for n, update in self._updates if n > seq]


class PolicyHost(Protocol):
    """What the follower needs of the router."""

    @property
    def catalog(self) -> Catalog: ...

    def locked(self) -> threading.Lock: ...

    def swap_policy(self, policy: Policy) -> None: ...


class SnapshotFollower:
    """Keeps a replica's learner at the trainer's newest snapshot (see the module doc)."""

    def __init__(
        self,
        host: PolicyHost,
        build: Callable[[], Policy],
        client: Any,
        keys: Keys,
        *,
        source: str,
        local: LocalUpdates,
        period_s: float,
        errors: tuple[type[BaseException], ...] = (OSError,),
        wall: Callable[[], float] = time.time,
        recipes: Callable[[str], Policy] | None = None,
    ) -> None:
        self._host = host
        self._build = build
        self._recipes = recipes
        self._client = client
        self._keys = keys
        self._source = source
        self._local = local
        self._period_s = period_s
        self._errors = errors
        self._wall = wall
        self.version = 0
        self.checksum = ""
        self.published = 0.0
        self.swaps = 0
        self.refused = 0
        self.refused_version = 0
        """The last version refused: not fetched again (a newer one is)."""
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None

    @property
    def age_s(self) -> float | None:
        """Seconds since the snapshot in use was published (None before the first)."""
        return None if not self.version else max(0.0, self._wall() - self.published)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cluster-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._close_pubsub()

    def _close_pubsub(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(*self._errors):
                self._pubsub.close()
            self._pubsub = None

    def _wait_signal(self) -> None:
        """Wait up to a period for an announcement (a plain wait while unsubscribed)."""
        deadline = time.monotonic() + self._period_s
        try:
            if self._pubsub is None:
                self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                self._pubsub.subscribe(self._keys.snapshot_channel)
            while not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                message = self._pubsub.get_message(timeout=min(left, 0.5))
                if message is not None and message.get("type") == "message":
                    return
        except self._errors:
            self._close_pubsub()
            self._stop.wait(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:
                log.exception("cluster_snapshot_check_failed")
            self._wait_signal()

    def check(self) -> bool:
        """Swap in the published snapshot if it is newer than the one in use; True if so."""
        try:
            raw = self._client.hget(self._keys.snapshot, "version")
            if raw is None or int(raw) <= max(self.version, self.refused_version):
                return False
            fields = self._client.hgetall(self._keys.snapshot)
        except self._errors as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            return False
        self.last_error = ""
        return self.apply(fields)

    def apply(self, fields: dict[bytes, bytes]) -> bool:
        """Verify and swap in a fetched snapshot (its hash's fields); False if refused (then
        counted, said in ``last_error`` until a snapshot is taken, and not fetched again)."""
        version = 0
        try:
            version = int(fields[b"version"])
            name, updates, body = parse_snapshot(fields[b"data"])
            marks = orjson.loads(fields.get(b"marks", b"{}"))
            mark = int(marks.get(self._source, 0))
            published = float(fields.get(b"published", b"0"))
            policy = self._learner(fields.get(b"recipe", b"").decode())
            if name != policy.name:
                raise ValueError(f"snapshot of policy {name!r}, this replica runs {policy.name!r}")
            policy.restore(body)
            policy.updates = updates
        except (
            KeyError, ValueError, TypeError, orjson.JSONDecodeError, BanditrouteError
        ) as exc:  # fmt: skip
            self.refused += 1
            self.refused_version = max(self.refused_version, version)
            self.last_error = f"snapshot {version} refused: {exc}"[:200]
            log.error("cluster_snapshot_refused", version=fields.get(b"version"),
                      error=str(exc)[:200])  # fmt: skip
            return False
        catalog = self._host.catalog
        replayed = self._relearn(policy, mark, catalog)
        with self._host.locked():
            # Updates learned while the snapshot was being built: in too, then swap.
            for seq, update in self._local.after(replayed):
                learn_update(policy, update, catalog)
                replayed = seq
            self._host.swap_policy(policy)
        self.version, self.published = version, published
        self.checksum = fields.get(b"checksum", b"").decode(errors="replace")[:64]
        self.swaps += 1
        log.info("cluster_snapshot_applied", version=version, updates=updates,
                 local_relearned=replayed > mark)  # fmt: skip
        return True

    def _learner(self, recipe: str) -> Policy:
        """An empty learner of the snapshot's ``recipe`` (empty: the configured default). A
        cost-aware one refuses a snapshot of another embedding width rather than carry it: a
        trainer configured with other ``[features]`` than this replica would otherwise reset
        the replica's embedding weights at every broadcast (a refusal is counted instead)."""
        if not recipe:
            policy = self._build()
        elif self._recipes is None:
            raise ValueError("a promoted policy's snapshot, and this replica builds none")
        else:
            policy = self._recipes(recipe)
        if isinstance(policy, CostAwarePolicy):
            policy.carry_semantic = False
        return policy

    def _relearn(self, policy: Policy, mark: int, catalog: Catalog) -> int:
        """Teach ``policy`` this replica's own updates numbered after ``mark``; returns the
        number of the last one (``mark`` if none)."""
        self._local.forget(mark)
        last = mark
        for seq, update in self._local.after(mark):
            learn_update(policy, update, catalog)
            last = seq
        return last


__all__ = ["LocalUpdates", "SnapshotFollower"]
