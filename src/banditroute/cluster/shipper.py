"""The replica's shipper: sends its outbox to the events stream and trims what the trainer holds.

A background thread, every :data:`SHIP_INTERVAL_S`: writes the outbox's buffer out, reads the
trainer's acknowledgement for this replica's source (the number up to which the central log
and the learner have its lines), deletes outbox segments acknowledged entirely, and sends the
lines written since the last batch (``XADD`` with an approximate ``MAXLEN``). Nothing on
Route's or Feedback's path waits on it.

When the acknowledgement stops moving while lines are outstanding and a trainer holds the
leader lock (the stream was trimmed or lost, Valkey restarted empty, a trainer took over and
missed a batch), it sends again from the acknowledged number after :data:`RESEND_AFTER_S`;
after any error it starts again from there at once. The trainer drops what it already has,
so a line is sent at least once and kept exactly once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from banditroute.cluster.events import (
    MAX_BATCH_BYTES,
    MAX_BATCH_LINES,
    STREAM_MAXLEN,
    Keys,
    encode_batch,
)
from banditroute.cluster.outbox import Outbox

log = structlog.get_logger(__name__)

SHIP_INTERVAL_S = 0.1
RESEND_AFTER_S = 5.0
MAX_BATCHES_PER_CYCLE = 8


class Shipper:
    """Ships one outbox; :meth:`cycle` is one round (the thread runs it in a loop)."""

    def __init__(
        self,
        outbox: Outbox,
        client: Any,
        keys: Keys,
        *,
        errors: tuple[type[BaseException], ...] = (OSError,),
        clock: Callable[[], float] = time.monotonic,
        resend_after_s: float = RESEND_AFTER_S,
    ) -> None:
        self.outbox = outbox
        self._client = client
        self._keys = keys
        self._errors = errors
        self._clock = clock
        self._resend_after_s = resend_after_s
        self.acked = 0
        self.shipped = 0
        self._acked_at = clock()
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False

    @property
    def backlog(self) -> int:
        """Lines numbered but not yet acknowledged by the trainer."""
        return max(0, self.outbox.last_seq - self.acked)

    def start(self) -> None:
        """Run :meth:`cycle` every :data:`SHIP_INTERVAL_S` on a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="cluster-shipper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after one last round (the rest is sent by the next start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.cycle()

    def _run(self) -> None:
        while not self._stop.wait(SHIP_INTERVAL_S):
            try:
                self.cycle()
            except Exception:
                log.exception("cluster_ship_failed")

    def cycle(self) -> int:
        """Write, read the acknowledgement, trim, send; returns the lines sent."""
        try:
            self.outbox.write()
        except OSError as exc:
            log.error("cluster_outbox_write_failed", error=str(exc))
        try:
            return self._exchange()
        except self._errors as exc:
            text = f"{type(exc).__name__}: {exc}"[:200]
            if text != self.last_error:
                log.warning("cluster_ship_failed", error=text)
            self.last_error = text
            self.shipped = self.acked  # whatever was in flight may be lost: send it again
            return 0

    def _exchange(self) -> int:
        raw = self._client.get(self._keys.ack(self.outbox.source))
        now = self._clock()
        if not self._started:
            self._started = True
            if raw is not None:
                # An outbox recreated from nothing must not reuse acknowledged numbers.
                self.outbox.advance_to(int(raw))
        acked = max(self.acked, int(raw)) if raw is not None else self.acked
        if acked != self.acked:
            self.acked, self._acked_at = acked, now
            self.outbox.trim(acked)
        self.shipped = max(self.shipped, self.acked)
        if (
            self.shipped > self.acked
            and now - self._acked_at >= self._resend_after_s
            and self._client.exists(self._keys.leader)
        ):
            log.info("cluster_resend", source=self.outbox.source, after=self.acked,
                     shipped=self.shipped)  # fmt: skip
            self.shipped, self._acked_at = self.acked, now
        sent = 0
        for _ in range(MAX_BATCHES_PER_CYCLE):
            lines = self.outbox.read(
                self.shipped, max_lines=MAX_BATCH_LINES, max_bytes=MAX_BATCH_BYTES
            )
            if not lines:
                break
            self._client.xadd(
                self._keys.events,
                encode_batch(self.outbox.source, lines),
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
            if self.shipped == self.acked:
                self._acked_at = now  # the clock for a resend starts with the first batch
            self.shipped = lines[-1].seq
            sent += len(lines)
        if self.last_error:
            log.info("cluster_ship_recovered")
            self.last_error = ""
        return sent


__all__ = ["Shipper"]
