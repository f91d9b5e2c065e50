"""The RouterService servicer: translates, calls the Router, maps domain errors. Nothing more."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
import structlog

from banditroute.errors import BanditrouteError
from banditroute.router import Router
from banditroute.server import convert
from banditroute.server.status import grpc_code
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)
T = TypeVar("T")


def _call(context: grpc.ServicerContext, rpc: str, work: Callable[[], T]) -> T:
    """Run ``work``; a domain error aborts the call with its status and message."""
    try:
        return work()
    except BanditrouteError as error:
        log.info("rpc_rejected", rpc=rpc, status=error.status.value, field=error.field,
                 message=error.message)  # fmt: skip
        context.abort(grpc_code(error), error.message)
        raise AssertionError("unreachable") from error  # abort raises


class RouterServicer(pb_grpc.RouterServiceServicer):  # type: ignore[misc]
    """gRPC face of a :class:`~banditroute.router.Router`."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def Route(self, request: pb.RouteRequest, context: grpc.ServicerContext) -> pb.RouteResponse:  # noqa: N802
        return _call(
            context,
            "Route",
            lambda: convert.route_response(self.router.route(convert.route_query(request))),
        )

    def Feedback(  # noqa: N802
        self, request: pb.FeedbackRequest, context: grpc.ServicerContext
    ) -> pb.FeedbackResponse:
        return _call(
            context,
            "Feedback",
            lambda: convert.feedback_response(
                self.router.feedback(convert.feedback_report(request))
            ),
        )

    def ListModels(  # noqa: N802
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[convert.model_info(m) for m in self.router.catalog])
