"""PromotePolicy and RollbackPolicy on a server of several workers: one policy on every worker.

Each worker has its own copy of the policy, so a promotion is made on all of them or none.
The worker that gets the call gates the candidate on the whole server's log (its own rows, and
every other worker's as of that worker's last Parquet export, ``log.export_interval_s``). When
it clears, the warmed policy travels as the cluster's promotions do (its candidate spec, the
recipe, and a snapshot: :mod:`banditroute.cluster.recipes`), through a file in the workers'
private folder: every other worker is asked, over its Unix socket, to adopt that file's
policy, and only when all of them serve its version does this worker promote it too and chain
the evidence (one audit record, in its log). A worker that does not answer within
:data:`PEER_POLICY_TIMEOUT_S` fails the call with UNAVAILABLE: the file is removed (a late
worker then finds nothing to adopt) and the workers that adopted are put back, so nothing
changed; the message says so, or names the workers that could not be put back. A worker the
supervisor restarts adopts the file's policy when it starts, so it serves what the others do
(the policy as promoted: what the others learned since reaches it through merge rounds from
then on). Rollback asks every other worker to put its previous policy back, then does the same
here and chains one ``rollback`` record.

The calls between workers are PromotePolicy and RollbackPolicy themselves, made with the
peer metadata (honoured over the Unix socket only) and the caller's admin credentials: a peer
PromotePolicy's candidate is ``adopt:ID`` or ``undo:ID`` (the change in the file), a peer
RollbackPolicy puts the previous policy back if there is one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
import grpc
import structlog

from banditroute.cluster.recipes import build_recipe, restore_recipe
from banditroute.config import Settings
from banditroute.errors import FailedPrecondition, InvalidArgument, Unavailable
from banditroute.policies.base import Policy
from banditroute.policies.sharing import SharedLearning
from banditroute.router import Router
from banditroute.server.servicer import WorkerPeers
from banditroute.snapshots import snapshot_bytes, snapshot_payload
from banditroute.store.reader import TABLES, export_selects
from banditroute.v1 import router_pb2 as pb

log = structlog.get_logger(__name__)

PEER_POLICY_TIMEOUT_S = 30.0
"""How long a promotion or rollback waits for another worker (it restores a snapshot)."""
PROMOTED_FILE = "promoted.json"
CHANGE_LOCK_FILE = "policy-change.lock"
"""Locked (flock) by the worker making a promotion or rollback, so one runs at a time in the
whole server, whichever workers the clients called."""
"""The promoted policy's file in the workers' private folder: change id, recipe, snapshot."""
ADOPT, UNDO = "adopt:", "undo:"


def whole_log(cursor: duckdb.DuckDBPyConnection, exports: list[Path]) -> None:
    """Make ``cursor`` (on this worker's log) read every worker's rows: its tables become
    views over its own rows and the Parquet exports in ``exports`` (the other workers')."""
    row = cursor.execute("SELECT current_database()").fetchone()
    assert row is not None
    database = '"' + str(row[0]).replace('"', '""') + '"'
    for table in TABLES:
        parts = [f"SELECT * FROM {database}.main.{table}"]
        for folder in exports:
            parts += export_selects(folder, (table,)).values()
        if len(parts) > 1:
            cursor.execute(f"CREATE TEMP VIEW {table} AS " + " UNION ALL BY NAME ".join(parts))


def _read_file(path: Path) -> tuple[str, str, bytes] | None:
    """The change id, recipe and snapshot payload of the promoted file, or None if none (or
    unreadable: then nothing is adopted)."""
    try:
        data = json.loads(path.read_text("utf-8"))
        return str(data["id"]), str(data["recipe"]), base64.b64decode(data["snapshot"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        log.error("promoted_file_unreadable", error=type(exc).__name__)
        return None


def _write_file(path: Path, change: str, recipe: str, payload: bytes) -> None:
    """Write the promoted file whole (a worker reading it sees the old file or the new)."""
    text = json.dumps(
        {"id": change, "recipe": recipe, "snapshot": base64.b64encode(payload).decode()}
    )
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, "utf-8")
    os.replace(temporary, path)


def adopt_promoted(router: Router, rundir: Path) -> str:
    """On a worker's start: adopt the policy the others were promoted to, if any; returns its
    change id ("" if none)."""
    found = _read_file(rundir / PROMOTED_FILE)
    if found is None:
        return ""
    change, recipe, payload = found
    try:
        policy = restore_recipe(recipe, payload, router.settings)
    except (ValueError, InvalidArgument) as exc:
        log.error("promoted_policy_not_adopted", error=type(exc).__name__)
        return ""
    router.adopt(SharedLearning(policy, change))
    log.info("promoted_policy_adopted", policy_version=policy.version)
    return change


class WorkerPolicy:
    """Promotions and rollbacks across the workers of one server (module doc)."""

    def __init__(
        self,
        router: Router,
        peers: WorkerPeers,
        rundir: Path,
        exports: list[Path],
        adopted: str = "",
    ) -> None:
        self._router = router
        self._peers = peers
        self._file = rundir / PROMOTED_FILE
        self.exports = exports
        """The other workers' Parquet exports, read with this worker's log by the gate."""
        self._adopted = adopted
        self._busy = threading.Lock()
        self._lock_path = rundir / CHANGE_LOCK_FILE

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held for a whole promotion or rollback: a second one at once, on this worker or on
        another (the lock file is the server's), is refused; two at once would each have the
        others adopt their change and remove the promoted file the other wrote."""
        busy = FailedPrecondition(
            "policy: another promotion or rollback is in progress on this server; try again "
            "when it is done",
            field="policy",
        )
        if not self._busy.acquire(blocking=False):
            raise busy
        try:
            with self._lock_path.open("a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise busy from None
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            self._busy.release()

    @property
    def settings(self) -> Settings:
        return self._router.settings

    # -- the worker the client called ------------------------------------------------------
    def promote(
        self,
        recipe: str,
        policy: Policy,
        evidence: Mapping[str, Any],
        context: grpc.ServicerContext,
    ) -> tuple[str, int]:
        """Make ``policy`` (built from ``recipe``) live on every worker; the version and the
        audit record's seq. Unavailable (nothing changed, or what did) if a worker fails."""
        build_recipe(recipe, self.settings)  # InvalidArgument if another process cannot build it
        with self._router.locked():  # a promoted shadow learns under the router's lock
            payload = snapshot_payload(snapshot_bytes(policy))
        # Every worker, this one too, serves the policy the snapshot restores: the same state
        # and version (a promoted shadow goes on learning as a shadow meanwhile).
        policy = restore_recipe(recipe, payload, self.settings)
        change = secrets.token_hex(16)
        _write_file(self._file, change, recipe, payload)
        wanted = policy.version
        request = pb.PromotePolicyRequest(candidate=ADOPT + change)
        adopted, missing = self._ask("PromotePolicy", request, context)
        if missing:
            self._file.unlink(missing_ok=True)  # a late worker then finds nothing to adopt
            undo = pb.PromotePolicyRequest(candidate=UNDO + change)
            _, stuck = self._ask("PromotePolicy", undo, context)
            stuck = [index for index in stuck if index in adopted]
            state = (
                "nothing changed (the others were put back)"
                if not stuck
                else f"worker(s) {stuck} could not be put back and may serve {wanted}: restart "
                "the server to bring every worker back to the configured policy"
            )
            raise Unavailable(
                f"policy: worker(s) {missing} did not take the promoted policy within "
                f"{PEER_POLICY_TIMEOUT_S:g} s; {state}",
                field="policy",
            )
        self._adopted = change
        version, seq = self._router.promote(SharedLearning(policy, change), evidence)
        log.info("policy_promoted_on_workers", policy_version=version, workers=self._peers.count)
        return version, seq

    def rollback(self, context: grpc.ServicerContext) -> tuple[str, str, int]:
        """Put the previous policy back on every worker; the restored version, the version
        rolled back and the audit record's seq. Unavailable naming the workers that did not
        confirm (this worker then keeps the promoted policy: call again)."""
        previous = self._router.previous_policy
        if previous is None:
            return self._router.rollback()  # FailedPrecondition: nothing to roll back
        self._file.unlink(missing_ok=True)  # a restarted worker comes back unpromoted
        _, missing = self._ask("RollbackPolicy", pb.RollbackPolicyRequest(), context)
        if missing:
            raise Unavailable(
                f"policy: worker(s) {missing} did not confirm the rollback within "
                f"{PEER_POLICY_TIMEOUT_S:g} s; the others that answered serve "
                f"{previous.version}, this one and those still serve "
                f"{self._router.policy.version}: call RollbackPolicy again",
                field="policy",
            )
        self._adopted = ""
        return self._router.rollback()

    def _ask(
        self, rpc: str, request: Any, context: grpc.ServicerContext
    ) -> tuple[list[int], list[int]]:
        """Ask every other worker; those that did it (answered OK), and the others."""
        calls = self._peers.ask(rpc, request, context, PEER_POLICY_TIMEOUT_S)
        done: list[int] = []
        failed: list[int] = []
        for call in calls:
            try:
                call.future.result()
            except grpc.RpcError as error:
                log.warning("peer_unanswered", rpc=rpc, worker=call.worker,
                            code=error.code().name)  # fmt: skip
                failed.append(call.worker)
            else:
                done.append(call.worker)
        return done, failed

    # -- a worker asked by another ---------------------------------------------------------
    def peer_promote(self, candidate: str) -> pb.PromotePolicyResponse:
        """Adopt (``adopt:ID``) or put back (``undo:ID``) the change in the promoted file;
        answers the version served afterwards."""
        if candidate.startswith(ADOPT):
            change = candidate[len(ADOPT) :]
            found = _read_file(self._file)
            if found is None or found[0] != change:
                raise FailedPrecondition("candidate: no such promotion", field="candidate")
            if self._adopted != change:
                try:
                    policy = restore_recipe(found[1], found[2], self.settings)
                except ValueError as exc:
                    raise FailedPrecondition(
                        "candidate: the promoted snapshot cannot be restored", field="candidate"
                    ) from exc
                self._router.adopt(SharedLearning(policy, change))
                self._adopted = change
        elif candidate.startswith(UNDO):
            if self._adopted == candidate[len(UNDO) :]:
                self._router.revert()
                self._adopted = ""
        else:
            raise InvalidArgument("candidate: not a call between workers", field="candidate")
        return pb.PromotePolicyResponse(policy_version=self._router.policy.version)

    def peer_rollback(self) -> pb.RollbackPolicyResponse:
        """Put the previous policy back if there is one; answers the version served."""
        self._adopted = ""
        return pb.RollbackPolicyResponse(policy_version=self._router.revert())


__all__ = ["PEER_POLICY_TIMEOUT_S", "WorkerPolicy", "adopt_promoted", "whole_log"]
