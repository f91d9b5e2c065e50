"""Stand-in banditroute servers for the client tests: one that answers from a script of status
codes, one that forwards to a real server and loses the first answer, one whose Route hangs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc

from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc


class ScriptedRouter(pb_grpc.RouterServiceServicer):  # type: ignore[misc]
    """Fails the first Route calls with the scripted codes, then answers ``model``; records
    every request it saw. With ``forward_to``, a call past the script is forwarded to that
    real server, and the first one forwarded is answered with ``lose_first`` instead of the
    real answer (the answer lost on the way back)."""

    def __init__(
        self,
        codes: list[grpc.StatusCode] | None = None,
        *,
        model: str = "scripted-model",
        forward_to: str | None = None,
        lose_first: grpc.StatusCode | None = None,
    ) -> None:
        self.codes = list(codes or [])
        self.model = model
        self.requests: list[Any] = []
        self.lose_first = lose_first
        self.hang = threading.Event()
        """Set by tests that make Route hang: the handler then waits for ``release``."""
        self.release = threading.Event()
        self.arrived = threading.Event()
        self._lock = threading.Lock()
        self._channel = None if forward_to is None else grpc.insecure_channel(forward_to)
        self._real = None if self._channel is None else pb_grpc.RouterServiceStub(self._channel)

    def _next_code(self) -> grpc.StatusCode | None:
        with self._lock:
            return self.codes.pop(0) if self.codes else None

    def Route(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.requests.append(request)
        self.arrived.set()
        if self.hang.is_set():
            self.release.wait()
            context.abort(grpc.StatusCode.UNAVAILABLE, "released")
        code = self._next_code()
        if code is not None:
            context.abort(code, f"scripted {code.name}")
        if self._real is not None:
            answer = self._real.Route(request, timeout=30.0)
            lost, self.lose_first = self.lose_first, None
            if lost is not None:
                context.abort(lost, "answer lost")
            return answer
        return pb.RouteResponse(decision_id="scripted-1", model=self.model, probability=1.0)

    def Feedback(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.requests.append(request)
        code = self._next_code()
        if code is not None:
            context.abort(code, f"scripted {code.name}")
        return pb.FeedbackResponse(
            reward=0.5, disposition=pb.FEEDBACK_DISPOSITION_LEARNED, feedback_count=1
        )

    def close(self) -> None:
        self.release.set()
        if self._channel is not None:
            self._channel.close()


@contextmanager
def serving(servicer: ScriptedRouter) -> Iterator[str]:
    """Serve ``servicer`` on a free loopback port; yields its address; stops it at the end."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_RouterServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        servicer.close()
        server.stop(grace=None).wait(30.0)
