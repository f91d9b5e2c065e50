"""The cluster's one trainer: learns every replica's updates exactly once and publishes snapshots.

Every trainer process tries to take the leader lock (:mod:`banditroute.cluster.leader`); the
one that holds it leads, the others stand by and take over once its lock expires. The leader
opens the central log (:mod:`banditroute.cluster.central`), restores the learner from the
state committed there (or builds it fresh, with the configured warm start), and then, in a
loop:

- reads the events stream (from its start: the stream is bounded, and whatever is already
  held is dropped by number) and, per batch, inserts the rows into the source's central file
  and learns the updates numbered after what the learner has learned from that source;
- every :data:`CHECKPOINT_S` commits the learned marks and the learner's snapshot together,
  then acknowledges to each replica the number up to which both its rows and its updates are
  committed (the replica may delete its outbox up to there). Only the sources heard from
  within the feedback horizon are acknowledged (and published, and their files held open): a
  source silent for longer (a replica gone, or one named by its process id that restarted
  under another name) is no longer written, and one that sends again is deduplicated against
  its committed mark. Acknowledgements do not expire: a replica restarted from an empty
  outbox under the same name, however much later, reads its acknowledgement and numbers after
  it; had it expired, the replica would number from 1 again and the trainer would drop those
  lines as already learned (an outbox incarnation id would let them expire);
- every ``snapshot_period_s`` publishes the learner's snapshot (the snapshot file format of
  :mod:`banditroute.snapshots`, with a version and its checksum) and announces the version on
  a pub/sub channel.
- applies a promotion or rollback a replica asked for (:mod:`banditroute.cluster.changes`):
  the promoted policy becomes the learner (built from its recipe,
  :mod:`banditroute.cluster.recipes`), the one it replaced is kept for a rollback, both are
  committed and the snapshot is published at once, so every replica serves it and the
  trainer keeps learning it; a standby taking over restores it from the commit.

Feedback a replica accepted for the decision of a replica that was gone (disposition
``FOR_TRAINER``) is joined with the owner's decision row and learned once, whichever of it and
the owner's own feedback comes first (:mod:`banditroute.cluster.joiner`); the decisions learned
that way are announced per replica tag, so an owner that comes back does not learn them again.

A line that cannot be learned (damaged or forged: features missing a key, a non-finite
number, not JSON) is set aside, logged without its content and counted
(:attr:`Trainer.lines_skipped`); it is acknowledged with the lines around it, so it is never
read again and never stops the cluster's learning. Only the line's content is judged so: an
error of the learner itself (a bug, no memory, a shape that no longer fits after a config
change) would fail on every line, so the leader stops there (:class:`LearnerFailed`): nothing
from that line on is committed or acknowledged, it steps down and leads again from the last
commit, loudly, until the cause is fixed; no line is lost.

A batch that does not follow what is held (lines lost on the way) is left: the replica sends
again from its acknowledgement. A trainer killed between commits loses only learning since
the last commit, which the next leader learns again from the resent lines: each update is in
the committed learner exactly once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import structlog

from banditroute import warm_start
from banditroute.cluster import feedback_horizon_s
from banditroute.cluster.central import CentralLog, Lineage, valid_source
from banditroute.cluster.changes import Change, ChangeDesk, Outcome
from banditroute.cluster.events import Batch, Keys, decode_batch
from banditroute.cluster.joiner import Joiner
from banditroute.cluster.leader import LeaderLock
from banditroute.cluster.orphans import announce_joins
from banditroute.cluster.recipes import build_recipe, restore_recipe
from banditroute.config import Settings
from banditroute.policies.base import Policy
from banditroute.policies.sharing import SharedUpdate, learn_update
from banditroute.snapshots import parse_snapshot, snapshot_bytes, snapshot_payload

log = structlog.get_logger(__name__)

CHECKPOINT_S = 1.0
LOCK_TTL_MS = 10_000
"""A leader that has not renewed its lock for this long (killed, hung) is replaced by a
standby; it renews every fifth of it."""
STANDBY_POLL_S = 0.5
READ_COUNT = 64
READ_BLOCK_MS = 200
RETRY_S = 1.0


class LearnerFailed(RuntimeError):
    """The learner raised on a line the trainer could read: the leader does not advance past
    it (:meth:`Trainer.apply`)."""


def build_learner(settings: Settings) -> Policy:
    """A fresh learner of the configured default policy (what a snapshot restores into)."""
    return build_recipe("", settings)


class Trainer:
    """One trainer process: standby until it holds the leader lock, then the leader."""

    def __init__(
        self,
        settings: Settings,
        central_path: Path,
        client: Any,
        keys: Keys,
        *,
        snapshot_period_s: float,
        errors: tuple[type[BaseException], ...] = (OSError,),
        lock_ttl_ms: int = LOCK_TTL_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.central_path = central_path
        self._client = client
        self.keys = keys
        self.snapshot_period_s = snapshot_period_s
        self._errors = errors
        self._clock = clock
        self.lock = LeaderLock(client, keys.leader, lock_ttl_ms)
        self.central: CentralLog | None = None
        self.policy: Policy | None = None
        self.lineage = Lineage()
        self.changes = ChangeDesk(client, keys)
        self.version = 0
        self._published = -1  # the learner's update count at the last publication
        self._learned: dict[str, int] = {}
        self._committed: dict[str, int] = {}
        self._heard: dict[str, float] = {}
        """When the trainer last read a batch of each source it acknowledges (wall clock)."""
        self._last_id = "0"
        self.leading = threading.Event()
        self.batches_skipped = 0
        """Stream entries set aside: not a batch (undecodable, numbers that do not match)."""
        self.lines_skipped = 0
        """A batch's lines set aside: malformed (damaged or forged: missing keys, wrong types,
        non-finite numbers, not JSON); each is logged (never its content), left out of
        learning and acknowledged with the lines around it."""
        self.joiner: Joiner | None = None
        self._wall = time.time

    # -- leadership ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Stand by or lead until ``stop`` is set; on stop, commit and give the lock up."""
        while not stop.is_set():
            try:
                if not self.lock.acquire():
                    stop.wait(STANDBY_POLL_S)
                    continue
            except self._errors as exc:
                log.warning("trainer_cluster_unreachable", error=str(exc)[:200])
                stop.wait(RETRY_S)
                continue
            release = False
            try:
                self._take_over()
                self._lead(stop)
            except self._errors as exc:
                log.warning("trainer_cluster_unreachable", error=str(exc)[:200])
                stop.wait(RETRY_S)
            except Exception:
                # The central log cannot be opened (a leader whose lock expired still holds
                # it, until its next renewal tells it so) or written: give the lock up (that
                # leader, or this process, takes it again) and retry; never exit.
                log.exception("trainer_lead_failed")
                release = True
                stop.wait(RETRY_S)
            finally:
                self._step_down(release=release or stop.is_set(), commit=stop.is_set())

    def _take_over(self) -> None:
        self.central = CentralLog(self.central_path)
        self.lineage = self.central.load_lineage()
        policy = build_recipe(self.lineage.recipe, self.settings)
        state = self.central.load_state()
        if state is not None:
            self.version, payload = state
            _name, updates, body = parse_snapshot(payload)
            policy.restore(body)
            policy.updates = updates
        elif self.settings.policy.warm_start is not None:
            plan = warm_start.load_plan(
                self.settings.policy.warm_start,
                self.settings.catalog,
                dict(self.settings.policy.warm_start_models),
            )
            warm_start.learn(policy, self.settings, plan)
        self.policy = policy
        self.joiner = Joiner(self.settings, self.central.find_decision, self.central.owner_learned)
        rows, counts = self.central.load_joins()
        self.joiner.restore(rows, counts)
        self._announce([(d, at) for d, kind, at, _ in rows if kind == "joined"])
        now = self._wall()
        heard = self.central.learned(now - self._horizon_s())
        self._committed = {source: seq for source, (seq, _) in heard.items()}
        self._heard = {source: now if at is None else at for source, (_, at) in heard.items()}
        self._learned = dict(self._committed)
        self._published = -1
        self._last_id = "0"
        self.leading.set()
        log.info("trainer_leading", version=self.version, updates=policy.updates,
                 sources=len(self._committed), token=self.lock.token[:8])  # fmt: skip

    def _step_down(self, *, release: bool, commit: bool = False) -> None:
        """Close the central log (after a last commit with ``commit``: a clean stop) and,
        with ``release``, give the lock up at once."""
        was = self.leading.is_set()
        if self.central is not None and commit and self.policy is not None:
            try:
                self.checkpoint()
            except Exception:
                log.exception("trainer_last_commit_failed")
        if self.central is not None:
            self.central.close()
            self.central = None
        self.policy = None
        self.joiner = None
        self.leading.clear()
        if release:
            with contextlib.suppress(*self._errors):
                self.lock.release()
        if was:
            log.info("trainer_standing_by")

    def close(self) -> None:
        """Commit, close the central log and give the lock up (after :meth:`lead_now`)."""
        self._step_down(release=True, commit=True)

    def _lead(self, stop: threading.Event) -> None:
        renew_every = self.lock.ttl_ms / 5000.0
        now = self._clock()
        next_renew, next_checkpoint = now + renew_every, now + CHECKPOINT_S
        next_publish = now
        while not stop.is_set():
            now = self._clock()
            if now >= next_renew:
                if not self.lock.renew():
                    log.warning("trainer_lock_lost")
                    return
                next_renew = now + renew_every
            self.read_once()
            self.take_change()
            now = self._clock()
            if now >= next_checkpoint:
                self.checkpoint()
                next_checkpoint = now + CHECKPOINT_S
            if now >= next_publish:
                self.publish()
                next_publish = now + self.snapshot_period_s

    def lead_now(self) -> bool:
        """Take the lock and the central log now if free (for a caller driving the trainer
        step by step, as ``simulations/cluster_learning.py`` does); True if leading."""
        if self.leading.is_set():
            return True
        if not self.lock.acquire():
            return False
        self._take_over()
        return True

    def drain(self) -> int:
        """Apply everything on the stream now, commit, acknowledge and publish (the steps of
        the leader's loop, at once); returns the batches read."""
        read = total = 0
        while (read := self.read_once(block_ms=None)) > 0:
            total += read
        self.checkpoint()
        self.publish()
        return total

    # -- learning -----------------------------------------------------------------------------
    def read_once(self, block_ms: int | None = READ_BLOCK_MS) -> int:
        """Read and apply one read's worth of the stream, waiting up to ``block_ms`` for it
        (None: not at all); returns the batches read."""
        reply = self._client.xread(
            {self.keys.events: self._last_id}, count=READ_COUNT, block=block_ms
        )
        read = 0
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self._last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                read += 1
                try:
                    batch = decode_batch(fields)
                except ValueError as exc:
                    self.batches_skipped += 1
                    log.error("trainer_batch_malformed", error=str(exc),
                              batches_skipped=self.batches_skipped)  # fmt: skip
                    continue
                self.apply(batch)
        return read

    def apply(self, batch: Batch) -> int:
        """Put a batch's rows in the central log and learn its updates, each at most once;
        returns the updates learned. :class:`LearnerFailed` if the learner raises: the
        learner is dropped (what it learned since the last commit is never committed), so
        the leader steps down without advancing past the line."""
        assert self.central is not None
        assert self.policy is not None
        if not valid_source(batch.source):
            self.batches_skipped += 1
            log.error("trainer_batch_malformed", error="source name")
            return 0
        self._heard[batch.source] = self._wall()
        self.central.ingest(batch.source, batch.lines)
        mark = self._mark(batch.source)
        fresh = [line for line in batch.lines if line.seq > mark]
        if not fresh or fresh[0].seq != mark + 1:
            return 0  # already learned, or a gap the replica fills by sending again
        learned = unknown = 0
        for line in fresh:
            update = self._update_of(batch.source, line.seq, line.data)
            if update is None:
                continue
            try:
                known = learn_update(self.policy, update, self.settings.catalog)
            except Exception as exc:  # the line was read: the learner itself failed
                self.policy = None
                self.leading.clear()  # step by step (lead_now), the next call takes over anew
                log.error("trainer_learner_failed", source=batch.source, seq=line.seq,
                          error=type(exc).__name__)  # fmt: skip
                raise LearnerFailed(f"the learner failed on {batch.source}#{line.seq}") from exc
            if known:
                learned += 1
            else:
                unknown += 1
        costs = self.joiner.take_costs() if self.joiner is not None else []
        if costs:
            self.central.fill_costs(costs)
        if unknown:
            # The replica's catalogue has a model the trainer's lacks: give both one config.
            log.warning("trainer_updates_skipped", source=batch.source, updates=unknown,
                        reason="a model not in the trainer's catalogue")  # fmt: skip
        self._learned[batch.source] = fresh[-1].seq
        return learned

    def _mark(self, source: str) -> int:
        """The number up to which ``source``'s updates are learned; for a source not heard
        from lately, its committed mark (so what it sends again is learned once)."""
        assert self.central is not None
        if source not in self._learned:
            self._learned[source] = self._committed[source] = self.central.learned_mark(source)
        return self._learned[source]

    def _horizon_s(self) -> float:
        return feedback_horizon_s(self.settings.reward.window_s)

    def _update_of(self, source: str, seq: int, data: bytes) -> SharedUpdate | None:
        """The update a line makes the learner learn, if any (:meth:`Joiner.update_of`: the
        line read and checked, features included); None for a line set aside."""
        assert self.joiner is not None
        try:
            return self.joiner.update_of(data, self._wall(), source)
        except ValueError as exc:  # its message names what is wrong, never the content
            self._skip_line("trainer_line_malformed", source, seq, str(exc)[:200])
        except (TypeError, KeyError) as exc:  # content no check foresaw: never quoted
            self._skip_line("trainer_line_malformed", source, seq, type(exc).__name__)
        return None

    def _skip_line(self, event: str, source: str, seq: int, error: str) -> None:
        """Set a line aside (counted in :attr:`lines_skipped`): learning goes on with the
        next line, and the line is acknowledged with them, so it is never read again."""
        self.lines_skipped += 1
        log.error(event, source=source, seq=seq, error=error, lines_skipped=self.lines_skipped)

    def _announce(self, joined: list[tuple[str, float]]) -> None:
        """Tell the owners which of their decisions the trainer learned from forwarded
        feedback (:func:`~banditroute.cluster.orphans.announce_joins`)."""
        keep_s = self._horizon_s()
        announce_joins(self._client, self.keys, joined, self._wall() - keep_s, keep_s)

    def checkpoint(self) -> None:
        """Commit what was learned (marks and learner together), forget the sources silent
        for longer than the feedback horizon, then acknowledge to each other replica what is
        committed for it; the files that joins opened for sources not heard from lately (a dead
        owner's decisions) are closed too."""
        assert self.central is not None
        assert self.policy is not None
        joiner = self.joiner
        assert joiner is not None
        now = self._wall()
        joiner.expire(now)
        if self._learned != self._committed or joiner.dirty:
            self._commit(self.version)
        for source in [s for s, at in self._heard.items() if at < now - self._horizon_s()]:
            for known in (self._heard, self._learned, self._committed):
                known.pop(source, None)
        self.central.release_all_but(set(self._heard))  # the forgotten ones' files too
        if not self._committed:
            return
        pipe = self._client.pipeline(transaction=False)
        for source, seq in self._committed.items():
            pipe.set(self.keys.ack(source), min(seq, self.central.ingested(source)))
        pipe.execute()

    def _commit(self, version: int) -> bytes:
        """Commit the learned marks, the learner (its snapshot payload is returned) and the
        joiner's state together."""
        assert self.central is not None
        assert self.policy is not None
        assert self.joiner is not None
        payload = snapshot_payload(snapshot_bytes(self.policy))
        joins = self.joiner.changes() if self.joiner.dirty else None
        self.central.commit_state(
            self._learned,
            version,
            self.policy.updates,
            payload,
            heard=self._heard,
            lineage=self.lineage,
            joins=joins,
        )
        self._committed = dict(self._learned)
        if joins is not None:
            self.joiner.committed(joins)
            self._announce(self.joiner.take_fresh())  # committed: the owners may hear of it
            log.info("trainer_forwarded_feedback", held=len(self.joiner.held),
                     duplicate_updates=self.joiner.duplicate_updates,
                     **dict(sorted(joins.counts.items())))  # fmt: skip
        return payload

    def publish(self) -> None:
        """Publish the learner's snapshot under a new version if it learned since the last
        publication (or the server lost it), and announce the version."""
        assert self.policy is not None
        assert self.central is not None
        current = self._client.hget(self.keys.snapshot, "version")
        if self.policy.updates == self._published and current is not None:
            return
        self.version += 1
        payload = self._commit(self.version)
        name, updates, _ = parse_snapshot(payload)
        digest = payload.split(b"\n", 2)[1]
        self._client.hset(
            self.keys.snapshot,
            mapping={
                "version": self.version,
                "policy": name,
                "recipe": self.lineage.recipe,
                "updates": updates,
                "checksum": digest,
                "published": f"{time.time():.6f}",
                "marks": orjson.dumps(self._committed),
                "data": payload,
            },
        )
        self._client.publish(self.keys.snapshot_channel, self.version)
        self._published = self.policy.updates
        log.info("snapshot_published", version=self.version, updates=updates,
                 bytes=len(payload), batches_skipped=self.batches_skipped,
                 lines_skipped=self.lines_skipped)  # fmt: skip

    # -- promotion and rollback ---------------------------------------------------------------
    def take_change(self) -> bool:
        """Apply the promotion or rollback a replica placed, if any, and give it its
        outcome; True if there was one."""
        if not self.changes.pending():
            return False
        change = self.changes.claim()
        if change is None:
            return False
        self.changes.finish(change, self._apply_change(change))
        return True

    def _apply_change(self, change: Change) -> Outcome:
        """Make the change's policy the learner (unless the committed lineage shows it is
        already: a leader killed before answering), commit and publish it now."""
        assert self.policy is not None
        lineage = self.lineage
        if change.id != lineage.change:
            try:
                if change.kind == "promote":
                    policy = restore_recipe(change.recipe, change.data, self.settings)
                    replaced = snapshot_payload(snapshot_bytes(self.policy))
                    lineage = Lineage(change.recipe, lineage.recipe, replaced, change.id)
                elif lineage.previous is None:
                    return Outcome(error="policy: no promotion to roll back")
                else:
                    policy = restore_recipe(lineage.previous_recipe, lineage.previous,
                                            self.settings)  # fmt: skip
                    lineage = Lineage(lineage.previous_recipe, "", None, change.id)
            except Exception as exc:  # a policy's restore raises its own types
                log.error("trainer_change_refused", change=change.id[:8], kind=change.kind,
                          error=type(exc).__name__)  # fmt: skip
                return Outcome(error=f"policy: the trainer cannot build the policy: {exc}")
            self.policy, self.lineage = policy, lineage
        self._published = -1
        self.publish()
        log.info("trainer_policy_changed", change=change.id[:8], kind=change.kind,
                 version=self.version, policy_version=self.policy.version)  # fmt: skip
        return Outcome(self.version, self.policy.version)


__all__ = ["LearnerFailed", "Trainer", "build_learner"]
