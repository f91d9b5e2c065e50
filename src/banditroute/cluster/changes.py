"""Promotions and rollbacks handed to the leader trainer through one Valkey hash.

A cluster's live policy is the trainer's learner (every replica serves its snapshots), so a
replica cannot promote a policy by swapping its own: the next snapshot would undo it. Instead
a replica places a :class:`Change` under ``policy:change`` (only when none is there: one change
at a time; it expires if no trainer ever claims it) and the leader trainer claims it, applies
it to its learner, commits and publishes, and writes the outcome under ``policy:result:ID``.

Claiming and withdrawing are scripts, so a change is either withdrawn by the replica that gave
up waiting (then it never takes effect) or claimed by the trainer (then the replica waits for
its result), never both. A claimed change stays in the hash until its result is written: a
leader killed in between leaves it for the next leader, which applies it once (the committed
lineage names the last change applied, :class:`banditroute.cluster.central.Lineage`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

from banditroute.cluster.events import Keys

ChangeKind = Literal["promote", "rollback"]
RESULT_TTL_S = 3600
"""How long a change's result stays readable."""

_SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'kind', ARGV[2], 'recipe', ARGV[3],
           'data', ARGV[4], 'state', 'pending')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

_WITHDRAW = """
if redis.call('HGET', KEYS[1], 'id') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'state') == 'pending' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'state', 'claimed')
redis.call('PERSIST', KEYS[1])
return redis.call('HGETALL', KEYS[1])
"""


@dataclass(frozen=True)
class Change:
    """One promotion (a recipe and a snapshot payload) or rollback (neither)."""

    id: str
    kind: ChangeKind
    recipe: str = ""
    data: bytes = b""


@dataclass(frozen=True)
class Outcome:
    """What the trainer made of a change: the snapshot version that carries it and its
    policy's version, or an error saying why nothing changed."""

    version: int = 0
    policy_version: str = ""
    error: str = ""


def new_change(kind: ChangeKind, recipe: str = "", data: bytes = b"") -> Change:
    """A change with a fresh random id."""
    return Change(secrets.token_hex(16), kind, recipe, data)


class ChangeDesk:
    """The change hash and results of one deployment, for replicas and the trainer."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._submit = client.register_script(_SUBMIT)
        self._withdraw = client.register_script(_WITHDRAW)
        self._claim = client.register_script(_CLAIM)

    # -- replica side ----------------------------------------------------------------------
    def submit(self, change: Change, expire_s: float) -> bool:
        """Place ``change`` unless another one is there (False), expiring unclaimed."""
        args = [change.id, change.kind, change.recipe, change.data, int(expire_s * 1000)]
        return bool(self._submit(keys=[self._keys.policy_change], args=args))

    def withdraw(self, change: Change) -> bool:
        """Take ``change`` back if no trainer claimed it yet; True if withdrawn (it will
        never take effect), False if claimed (its result will come)."""
        return bool(self._withdraw(keys=[self._keys.policy_change], args=[change.id]))

    def outcome(self, change: Change) -> Outcome | None:
        """The trainer's outcome of ``change``, or None while there is none."""
        fields = self._client.hgetall(self._keys.policy_result(change.id))
        if not fields:
            return None
        return Outcome(
            int(fields.get(b"version", b"0")),
            fields.get(b"policy_version", b"").decode(errors="replace")[:200],
            fields.get(b"error", b"").decode(errors="replace")[:500],
        )

    # -- trainer side ----------------------------------------------------------------------
    def pending(self) -> bool:
        """Whether a change waits (one cheap command per trainer loop)."""
        return bool(self._client.exists(self._keys.policy_change))

    def claim(self) -> Change | None:
        """Claim the waiting change (None if none, or malformed: then it is dropped with an
        error outcome when it has an id)."""
        raw = self._claim(keys=[self._keys.policy_change])
        if not raw:
            return None
        fields = {bytes(raw[i]): bytes(raw[i + 1]) for i in range(0, len(raw) - 1, 2)}
        change_id = fields.get(b"id", b"").decode(errors="replace")
        kind = fields.get(b"kind", b"").decode(errors="replace")
        if kind not in ("promote", "rollback") or not change_id.isalnum():
            self.finish(Change(change_id or "malformed", "rollback"),
                        Outcome(error="malformed change request"))  # fmt: skip
            return None
        recipe = fields.get(b"recipe", b"").decode(errors="replace")
        checked: ChangeKind = "promote" if kind == "promote" else "rollback"
        return Change(change_id, checked, recipe, fields.get(b"data", b""))

    def finish(self, change: Change, outcome: Outcome) -> None:
        """Write ``change``'s outcome and remove the change, together."""
        result = self._keys.policy_result(change.id)
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(result, mapping={"version": outcome.version,
                                   "policy_version": outcome.policy_version,
                                   "error": outcome.error})  # fmt: skip
        pipe.expire(result, RESULT_TTL_S)
        pipe.delete(self._keys.policy_change)
        pipe.execute()


__all__ = ["Change", "ChangeDesk", "ChangeKind", "Outcome", "new_change"]
