"""Feedback for another replica's decision, forwarded to that replica.

With ``[cluster]`` every decision id starts with the tag of the replica that made it
(:func:`banditroute.cluster.replica_tag`), and every replica's heartbeat registers its gRPC
address (:class:`banditroute.cluster.registry.Registry`). A load balancer may send Feedback
anywhere; a replica that gets one for another replica's decision relays it to that replica's
address with the caller's credentials (so the same access rules apply there) and returns its
answer as is. A replica that is registered but does not answer gives UNAVAILABLE (retry: it is
restarting, and restores its pending decisions from its log); for a tag no live replica has,
:meth:`ReplicaPeers.owner` raises :class:`OwnerGone` and the feedback is accepted here for the
trainer to join (:mod:`banditroute.cluster.orphans`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
import structlog

from banditroute.client.channels import ChannelOptions, open_channel
from banditroute.cluster import REPLICA_TAG_HEX, replica_tag
from banditroute.errors import NotFound
from banditroute.server.auth import API_KEY_HEADERS
from banditroute.server.peer_tls import tls_problem
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)

FORWARDED_KEY = "x-banditroute-forwarded"
"""Metadata of a call another replica relayed: answer it here, never relay it again."""
FORWARD_TIMEOUT_S = 10.0
MAX_LOGGED_DETAILS = 400
"""A failed relay's gRPC error text is logged up to this many characters."""
REFRESH_S = 1.0
"""The replica addresses are read again at most this often when a tag is not known."""
HEX = frozenset("0123456789abcdef")


class OwnerGone(NotFound):
    """The replica whose tag a decision id carries is not alive in the registry."""


class ReplicaPeers:
    """This replica's view of the others' addresses, keyed by their tags."""

    def __init__(
        self,
        replica_id: str,
        members: Callable[[], dict[str, str]],
        known: Callable[[str], bool | None] = lambda tag: None,
        tls: bool | grpc.ChannelCredentials = False,
        options: ChannelOptions = (),
    ) -> None:
        self.tag = replica_tag(replica_id)
        self._tls, self._options = tls, options  # banditroute.server.peer_tls
        self._members = members
        self._known = known
        self._addresses: dict[str, str] = {}
        self._read_at = float("-inf")
        self._lock = threading.Lock()
        self._stubs: dict[str, pb_grpc.RouterServiceStub] = {}

    def _address(self, tag: str) -> str | None:
        with self._lock:
            address = self._addresses.get(tag)
            if address is not None or time.monotonic() - self._read_at < REFRESH_S:
                return address
            self._read_at = time.monotonic()
        members = self._members()
        with self._lock:
            self._addresses = {replica_tag(rid): addr for rid, addr in members.items() if addr}
            return self._addresses.get(tag)

    def owner(self, decision_id: str, context: grpc.ServicerContext) -> str | None:
        """The address to relay a Feedback for ``decision_id`` to, or None to answer it here
        (this replica's decision, a relayed call, or an id no replica made). OwnerGone when
        the replica that made it is not alive in the registry; NotFound when no replica of
        the cluster ever had its tag (``known`` says, None when it cannot tell)."""
        tag = decision_id[:REPLICA_TAG_HEX]
        if (
            tag == self.tag
            or len(tag) < REPLICA_TAG_HEX
            or not set(tag) <= HEX
            or any(key == FORWARDED_KEY for key, _ in context.invocation_metadata())
        ):
            return None
        address = self._address(tag)
        if address is None and self._known(tag) is False:
            raise NotFound(
                "decision_id: no pending decision with this id (no replica of this cluster "
                "makes ids like it)",
                field="decision_id",
            )
        if address is None:
            raise OwnerGone(
                "decision_id: made by a replica that is not alive now (stopped, or its "
                "heartbeats stopped)",
                field="decision_id",
            )
        return address

    def _forget(self, address: str) -> None:
        with self._lock:
            self._addresses = {t: a for t, a in self._addresses.items() if a != address}
            self._read_at = float("-inf")

    def _stub(self, address: str) -> pb_grpc.RouterServiceStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = open_channel(address, self._tls, self._options)
            stub = self._stubs.setdefault(address, pb_grpc.RouterServiceStub(channel))
        return stub

    def forward(
        self, address: str, request: pb.FeedbackRequest, context: grpc.ServicerContext
    ) -> pb.FeedbackResponse:
        """Relay the Feedback with the caller's credentials; the owner's status comes back."""
        keys = [(k, v) for k, v in context.invocation_metadata() if k in API_KEY_HEADERS]
        remaining = context.time_remaining()
        timeout = FORWARD_TIMEOUT_S if remaining is None else min(FORWARD_TIMEOUT_S, remaining)
        try:
            response: pb.FeedbackResponse = self._stub(address).Feedback(
                request, metadata=[*keys, (FORWARDED_KEY, self.tag)], timeout=timeout
            )
        except grpc.RpcError as error:
            code = error.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._forget(address)  # it restarted elsewhere, or left: read the registry
                details = error.details() or ""
                problem = None if self._tls is False else tls_problem(details)
                log.warning("replica_relay_failed", address=address, status=code.name,
                            problem=problem, details=details[:MAX_LOGGED_DETAILS])  # fmt: skip
                context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "the replica that made this decision does not answer now; retry"
                    if problem is None
                    else f"the replica that made this decision cannot be reached: {problem}",
                )
            context.abort(code, error.details() or "forwarded Feedback failed")
            raise AssertionError("unreachable") from error
        return response


__all__ = ["FORWARDED_KEY", "OwnerGone", "ReplicaPeers"]
