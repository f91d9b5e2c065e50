"""Budgets, hard caps, rate and in-flight limits held together by every replica.

One script per admitted Route (:data:`_ADMIT`, run with EVALSHA) checks, against the shared
state, the chosen model's breaker, its in-flight and per-minute limits, and the tenant's hard
cap, and on success takes the slot, counts the request in the minute and *reserves* the
request's expected cost, all atomically, so concurrent replicas cannot both take the last
dollar or the last slot. A Route to a model without limits for a tenant without a cap makes no
round trip at all (breakers are mirrored locally, :mod:`banditroute.cluster.breakers`).

Shared keys (``PREFIX:`` first):

- ``budget:TENANT:PERIOD`` (hash): ``s:REPLICA`` the replica's charged spend in the period,
  ``n:REPLICA`` its charged requests, ``r:REPLICA`` its outstanding reservations. Spend is
  written as each replica's *absolute* total (its own budget counts it exactly, restored
  from its log after a restart), so a write repeated after a timeout, or after the server
  lost its data, counts once; reservations of replicas gone from the registry are dropped.
- ``inflight:MODEL`` (hash): admitted routes in flight per replica.
- ``rate:MODEL`` (hash): ``r:SECOND`` requests and ``t:SECOND`` tokens admitted in each second
  of the server's clock (a sliding minute, as the local tracker counts it).

Feedback does not wait on the network: charges (new absolute spend) and releases (in-flight
slot, reservation) are pushed by a background thread, woken at once. The cap's overshoot is
bounded by the reservations: a request is admitted only while charged spend plus reserved
cost is under the cap, so the spend can pass the cap by the last admitted request's cost plus
the difference between reported and expected costs.

Degraded (the server unreachable): the admission is decided here, on the last known state:
a model's limit becomes this replica's share (limit / the last known number of replicas) of
its own counts, and a cap holds against the other replicas' last known spend and
reservations plus this replica's spend and reservations now. Everything this replica charged
meanwhile is in its budgets, so the next push (absolute figures) brings the shared state up to
date, and a full resynchronisation runs whenever the server comes back.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import structlog

from banditroute.admission import Ticket
from banditroute.budgets import BudgetStatus, period_start
from banditroute.catalog import ModelSpec
from banditroute.cluster.connection import ClusterLink, Degraded
from banditroute.cluster.registry import MISSED_BEATS, Registry
from banditroute.errors import ResourceExhausted
from banditroute.health import HealthTracker
from banditroute.tenancy import Tenant

if TYPE_CHECKING:
    from banditroute.config import Settings

log = structlog.get_logger(__name__)

_CAP_TOLERANCE = 1e-9
"""Relative rounding slack of the hard cap comparison (as the local budget's)."""
_PERIOD_S = {"hour": 3600, "day": 86400, "month": 31 * 86400}
"""How long a period's budget hash lives (plus :data:`_KEEP_S`)."""
_KEEP_S = 86400
RESYNC_BEATS = 5
"""Every this many heartbeats the replica rewrites its absolute figures (heals any drift)."""

_ADMIT = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local sec = tonumber(t[1])
local me = ARGV[1]
local alive_after = now_ms - tonumber(ARGV[2])
local function alive(rid)
  if rid == me then return true end
  local score = redis.call('ZSCORE', KEYS[1], rid)
  return score and tonumber(score) > alive_after
end
local function positive(v)
  v = tonumber(v)
  if v and v > 0 then return v end
  return 0
end
local b = redis.call('HGET', KEYS[5], ARGV[9])
if b then
  local until_ms = tonumber(string.match(b, '^(%d+)'))
  if until_ms and until_ms > now_ms then return {2, 'breaker', b} end
end
local max_inflight = tonumber(ARGV[8])
if max_inflight then
  local inflight = 0
  local fields = redis.call('HGETALL', KEYS[4])
  for i = 1, #fields, 2 do
    if alive(fields[i]) then
      inflight = inflight + positive(fields[i + 1])
    else
      redis.call('HDEL', KEYS[4], fields[i])
    end
  end
  if inflight >= max_inflight then return {2, 'inflight', tostring(inflight)} end
end
local rpm, tpm = tonumber(ARGV[5]), tonumber(ARGV[6])
local tokens, wanted = tonumber(ARGV[7]), tonumber(ARGV[10])
if rpm or tpm then
  local reqs, toks = 0, 0
  local fields = redis.call('HGETALL', KEYS[3])
  for i = 1, #fields, 2 do
    local kind, s = string.match(fields[i], '^(%a):(%d+)$')
    s = tonumber(s)
    if s == nil or s + 61 <= sec then
      redis.call('HDEL', KEYS[3], fields[i])
    elseif kind == 'r' then
      reqs = reqs + tonumber(fields[i + 1])
    else
      toks = toks + tonumber(fields[i + 1])
    end
  end
  if rpm and reqs >= rpm then return {2, 'rpm', tostring(reqs)} end
  if tpm and (toks >= tpm or toks + wanted > tpm) then return {2, 'tpm', tostring(toks)} end
end
local limit = tonumber(ARGV[3])
local total, others = 0, 0
if limit then
  local fields = redis.call('HGETALL', KEYS[2])
  for i = 1, #fields, 2 do
    local kind, rid = string.match(fields[i], '^(%a):(.+)$')
    local v = positive(fields[i + 1])
    if kind == 's' or (kind == 'r' and alive(rid)) then
      total = total + v
      if rid ~= me then others = others + v end
    elseif kind == 'r' then
      redis.call('HDEL', KEYS[2], fields[i])
    end
  end
  if total >= limit * (1 - 1e-9) then return {1, tostring(total), tostring(others)} end
end
if max_inflight then redis.call('HINCRBY', KEYS[4], me, 1) end
if rpm or tpm then
  redis.call('HINCRBY', KEYS[3], 'r:' .. sec, 1)
  redis.call('HINCRBY', KEYS[3], 't:' .. sec, tokens)
  redis.call('PEXPIRE', KEYS[3], 62000)
end
if limit then
  redis.call('HINCRBYFLOAT', KEYS[2], 'r:' .. me, ARGV[4])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[11]))
end
return {0, tostring(total), tostring(others)}
"""


class _Batch(NamedTuple):
    """What one push sends: released tickets, tenants whose spend changed, whether to
    rewrite every figure, and this replica's outstanding reservations and in-flight counts."""

    releases: list[Ticket]
    dirty: set[str]
    resync: bool
    outstanding: dict[tuple[str, float], float]
    in_flight: dict[str, int]


def _arg(value: float | int | None) -> str:
    """A script argument: a number, or empty for "no limit"."""
    return "" if value is None else repr(value)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class SharedLimits:
    """The cluster's :class:`~banditroute.admission.SharedAdmission` (see the module
    docstring). ``settings`` gives the settings in force (a reload may change budgets and
    limits), ``budget_status`` a tenant's budget figures here."""

    def __init__(
        self,
        link: ClusterLink,
        registry: Registry,
        health: HealthTracker,
        settings: Callable[[], Settings],
        budget_status: Callable[[str], BudgetStatus | None],
    ) -> None:
        self._link = link
        self._registry = registry
        self._health = health
        self._settings = settings
        self._budget_status = budget_status
        self._me = link.replica_id
        self._admit = link.script(_ADMIT)
        self._replicas_key = link.key("replicas")
        self._breakers_key = link.key("breakers")
        self._ttl_ms = int(MISSED_BEATS * link.settings.heartbeat_s * 1000)
        self._lock = threading.Lock()
        self._pushing = threading.Lock()
        self._outstanding: dict[tuple[str, float], float] = defaultdict(float)
        self._in_flight: dict[str, int] = defaultdict(int)
        self._others: dict[tuple[str, float], float] = {}
        self._releases: list[Ticket] = []
        self._dirty: set[str] = set()
        self._resync = True
        self._beats = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        link.on_change(self._link_changed)
        registry.on_renewed(lambda: self._link_changed(False))

    # -- keys --------------------------------------------------------------------------------------
    def budget_key(self, tenant: str, start: float) -> str:
        """The shared hash of ``tenant``'s budget period starting at ``start``."""
        return self._link.key("budget", tenant, str(int(start)))

    def _model_keys(self, model: str) -> tuple[str, str]:
        return self._link.key("rate", model), self._link.key("inflight", model)

    # -- admission (Route's thread) ----------------------------------------------------------------
    def admit(
        self, tenant: Tenant, model: ModelSpec, tokens: int, output_tokens: int, now: float
    ) -> Ticket | str:
        """See :meth:`banditroute.admission.SharedAdmission.admit`."""
        budget = tenant.budget
        limit = None if budget is None else budget.limit_usd
        rpm, tpm, max_in_flight = (
            model.requests_per_minute, model.tokens_per_minute, model.max_in_flight,
        )  # fmt: skip
        if limit is None and rpm is None and tpm is None and max_in_flight is None:
            return Ticket(tenant.name, model.id, None, 0.0, False)  # nothing shared to check
        start = None if budget is None or limit is None else period_start(budget.period, now)
        expected = model.price(tokens, output_tokens) if start is not None else 0.0
        ticket = Ticket(tenant.name, model.id, start, expected, max_in_flight is not None)
        self._hold(ticket, 1)  # counted before the script, so a resync never drops it
        rate_key, inflight_key = self._model_keys(model.id)
        keys = [
            self._replicas_key,
            "" if start is None else self.budget_key(tenant.name, start),
            rate_key, inflight_key, self._breakers_key,
        ]  # fmt: skip
        period = "day" if budget is None else budget.period
        args = [
            self._me, self._ttl_ms, _arg(limit), repr(expected), _arg(rpm), _arg(tpm), tokens,
            _arg(max_in_flight), model.id, tokens + output_tokens,
            _PERIOD_S[period] + _KEEP_S,
        ]  # fmt: skip
        try:
            reply = self._link.call(lambda client: self._admit(keys=keys, args=args))
        except Degraded:
            return self._admit_alone(ticket, tenant, model, tokens, output_tokens)
        code = int(reply[0])
        if start is not None and code in (0, 1):
            with self._lock:
                self._others[(tenant.name, start)] = float(_text(reply[2]))
        if code == 0:
            return ticket
        self._hold(ticket, -1)
        if code == 1:
            assert budget is not None
            assert limit is not None
            raise ResourceExhausted(
                f"budget: tenant {tenant.name!r} spent and reserved ${float(_text(reply[1])):.4f}"
                f" of its ${limit:.4f} {budget.period} budget (all replicas)",
                field="budget",
            )
        return self._why(_text(reply[1]), model, _text(reply[2]))

    def _why(self, kind: str, model: ModelSpec, detail: str) -> str:
        if kind == "breaker":
            cause = detail.split("|", 3)[-1] if detail.count("|") >= 3 else "another replica"
            return f"circuit open on another replica after {cause}"
        if kind == "inflight":
            return f"in-flight limit {model.max_in_flight} reached across replicas"
        if kind == "rpm":
            return f"rate limit {model.requests_per_minute} requests/min reached across replicas"
        return f"token limit {model.tokens_per_minute} tokens/min reached across replicas"

    def _admit_alone(
        self, ticket: Ticket, tenant: Tenant, model: ModelSpec, tokens: int, output_tokens: int
    ) -> Ticket | str:
        """The server is unreachable: decide on this replica's share and last known state."""
        replicas = max(1, self._registry.alive)
        stats = self._health.stats(model.id)  # counts this route already (try_admit)
        why = None
        if model.max_in_flight is not None:
            share = max(1, model.max_in_flight // replicas)
            if stats.in_flight - 1 >= share:
                why = f"in-flight limit {share} (1/{replicas} of {model.max_in_flight}) reached"
        if why is None and model.requests_per_minute is not None:
            share = max(1, model.requests_per_minute // replicas)
            if stats.requests_last_minute - 1 >= share:
                why = f"rate limit {share} requests/min (1/{replicas}) reached"
        if why is None and model.tokens_per_minute is not None:
            share = max(1, model.tokens_per_minute // replicas)
            used = stats.tokens_last_minute - tokens
            if used >= share or used + tokens + output_tokens > share:
                why = f"token limit {share} tokens/min (1/{replicas}) reached"
        if why is not None:
            self._hold(ticket, -1)
            return f"{why} while the cluster is unreachable"
        budget = tenant.budget
        if ticket.period_start is not None and budget is not None and budget.limit_usd:
            status = self._budget_status(tenant.name)
            own = 0.0 if status is None else status.own_spend_usd
            with self._lock:
                key = (tenant.name, ticket.period_start)
                others = self._others.get(key, 0.0)
                reserved = self._outstanding[key] - ticket.reserved_usd
            total = others + own + reserved
            if total >= budget.limit_usd * (1.0 - _CAP_TOLERANCE):
                self._hold(ticket, -1)
                raise ResourceExhausted(
                    f"budget: tenant {tenant.name!r} spent and reserved about ${total:.4f} of "
                    f"its ${budget.limit_usd:.4f} {budget.period} budget (all replicas, as last "
                    "known: the cluster is unreachable)",
                    field="budget",
                )
        return ticket

    def _hold(self, ticket: Ticket, sign: int) -> None:
        """Count (+1) or uncount (-1) the ticket in this replica's outstanding figures."""
        with self._lock:
            if ticket.period_start is not None:
                self._outstanding[(ticket.tenant, ticket.period_start)] += (
                    sign * ticket.reserved_usd
                )
            if ticket.in_flight:
                self._in_flight[ticket.model] += sign

    # -- feedback (no network on the caller's thread) ----------------------------------------------
    def release(self, ticket: Ticket) -> None:
        """See :meth:`banditroute.admission.SharedAdmission.release`."""
        if ticket.period_start is None and not ticket.in_flight:
            return
        self._hold(ticket, -1)
        with self._lock:
            self._releases.append(ticket)
        self._wake.set()

    def spent(self, tenant: str) -> None:
        """See :meth:`banditroute.admission.SharedAdmission.spent`: for a tenant with a
        hard cap the charge (and the release of the decision's reservation) is pushed before
        the feedback is acknowledged (one round trip, bounded by ``cluster.timeout_s``; left
        to the background push when the server is unreachable), so a client that waits for
        the acknowledgement sees the cap hold exactly."""
        budget = self._settings().access.tenants.get(tenant)
        with self._lock:
            if budget is not None and budget.budget is not None:
                self._dirty.add(tenant)
        if budget is not None and budget.budget is not None and budget.budget.limit_usd:
            self.push()
        else:
            self._wake.set()

    def totals(self, status: BudgetStatus) -> BudgetStatus:
        """See :meth:`banditroute.admission.SharedAdmission.totals` (one read, for GetStats;
        this replica's own figures are its freshest, the others' as last written)."""
        key = self.budget_key(status.tenant, status.period_start)
        found = self._link.try_call(lambda client: client.hgetall(key))
        if found is None:
            return status
        spend, requests = status.own_spend_usd, status.own_requests
        for raw_field, raw_value in found.items():
            field = _text(raw_field)
            if field.endswith(f":{self._me}"):
                continue
            if field.startswith("s:"):
                spend += float(_text(raw_value))
            elif field.startswith("n:"):
                requests += int(float(_text(raw_value)))
        return dataclasses.replace(status, spend_usd=spend, requests=requests)

    # -- background pushes -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the pusher thread."""
        self._thread = threading.Thread(target=self._run, name="cluster-limits", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Push what is left (if the server answers) and stop the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.push()

    def beat(self) -> None:
        """Called after every heartbeat: now and then rewrite the absolute figures."""
        self._beats += 1
        if self._beats % RESYNC_BEATS == 0:
            with self._lock:
                self._resync = True
            self._wake.set()

    def _link_changed(self, degraded: bool) -> None:
        if not degraded:  # back: everything charged and released meanwhile goes out whole
            with self._lock:
                self._resync = True
            self._wake.set()

    def _run(self) -> None:
        heartbeat = self._link.settings.heartbeat_s
        while not self._stop.is_set():
            self._wake.wait(heartbeat)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.push()
            except Exception:
                log.exception("cluster_push_failed")

    def push(self) -> bool:
        """Send the charges and releases recorded since the last push (a full rewrite of this
        replica's figures after an outage); True when the server took them. One push at a
        time, so the spend written last is always the latest."""
        with self._pushing:
            return self._push()

    def _push(self) -> bool:
        with self._lock:
            releases, self._releases = self._releases, []
            dirty, self._dirty = self._dirty, set()
            resync, self._resync = self._resync, False
            outstanding = dict(self._outstanding)
            in_flight = dict(self._in_flight)
        if not (releases or dirty or resync):
            return True
        settings = self._settings()
        tenants = settings.access.tenants
        if resync:
            # Every figure this replica may have written, zero where nothing is outstanding
            # now: a restarted replica (same id) clears what its previous process held.
            dirty |= {name for name, t in tenants.items() if t.budget is not None}
            now = time.time()
            for name, tenant in tenants.items():
                if tenant.budget is not None and tenant.budget.limit_usd is not None:
                    outstanding.setdefault((name, period_start(tenant.budget.period, now)), 0.0)
            for model in settings.catalog:
                if model.max_in_flight is not None:
                    in_flight.setdefault(model.id, 0)
        try:
            batch = _Batch(releases, dirty, resync, outstanding, in_flight)
            self._link.call(lambda client: self._send(client, batch))
        except Degraded:
            with self._lock:  # releases are lost with the batch: the next resync rewrites all
                self._dirty |= dirty
                self._resync = True
            return False
        return True

    def _send(self, client: Any, batch: _Batch) -> None:
        me = self._me
        releases, dirty, resync, outstanding, in_flight = batch
        pipe = client.pipeline(transaction=False)
        for tenant in sorted(dirty):
            status = self._budget_status(tenant)
            if status is None:
                continue
            key = self.budget_key(tenant, status.period_start)
            pipe.hset(key, mapping={
                f"s:{me}": repr(status.own_spend_usd), f"n:{me}": status.own_requests,
            })  # fmt: skip
            pipe.expire(key, _PERIOD_S[status.period] + _KEEP_S)
        if resync:
            for (tenant, start), usd in outstanding.items():
                pipe.hset(self.budget_key(tenant, start), f"r:{me}", repr(max(0.0, usd)))
            for model, count in in_flight.items():
                pipe.hset(self._model_keys(model)[1], me, max(0, count))
        else:
            for ticket in releases:
                if ticket.period_start is not None:
                    key = self.budget_key(ticket.tenant, ticket.period_start)
                    pipe.hincrbyfloat(key, f"r:{me}", -ticket.reserved_usd)
                if ticket.in_flight:
                    pipe.hincrby(self._model_keys(ticket.model)[1], me, -1)
        pipe.execute()
        if resync:  # forget reservations of periods long over (none can be outstanding)
            horizon = time.time() - _PERIOD_S["month"] - _KEEP_S
            with self._lock:
                for old in [k for k in self._outstanding if k[1] < horizon]:
                    del self._outstanding[old]


__all__ = ["SharedLimits"]
