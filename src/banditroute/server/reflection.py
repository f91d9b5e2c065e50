"""Server reflection under both protocol names: grpc.reflection.v1 and v1alpha.

grpcio-reflection implements only ``grpc.reflection.v1alpha.ServerReflection``, but newer
clients (grpcurl, Postman, grpc-java's and grpc-go's reflection clients) ask for
``grpc.reflection.v1.ServerReflection`` first, and some never fall back. v1 is the same
protocol under a new package name: its messages have the same fields with the same numbers, so
the v1alpha servicer answers v1 requests byte for byte; it is registered under both names.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serve reflection for ``service_names`` (and both reflection services) on ``server``."""
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    servicer = reflection.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE_NAME,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))
