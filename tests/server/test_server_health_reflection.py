"""The standard gRPC health service and server reflection, as grpcurl and load balancers use
them."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb

ROUTER = "banditroute.v1.RouterService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _reflect(channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest) -> object:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    assert len(responses) == 1
    return responses[0]


@pytest.mark.parametrize("name", ["", ROUTER])
def test_health_check_is_serving(channel: grpc.Channel, name: str) -> None:
    """grpc.health.v1 Check reports SERVING for the server as a whole and for RouterService."""
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
    assert response.status == SERVING


def test_health_check_of_unknown_service_is_not_found(channel: grpc.Channel) -> None:
    """Check for a service the server does not host fails with NOT_FOUND."""
    stub = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_after_stop_is_not_serving(service: Service, channel: grpc.Channel) -> None:
    """Once the service stops, health reports NOT_SERVING or the server is unavailable."""
    stub = health_pb2_grpc.HealthStub(channel)
    assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
    service.stop()
    outcome: object
    try:
        outcome = stub.Check(health_pb2.HealthCheckRequest(), timeout=30).status
    except grpc.RpcError as error:
        outcome = error.code() if isinstance(error, grpc.Call) else error
    assert outcome in (NOT_SERVING, grpc.StatusCode.UNAVAILABLE)


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    """Server reflection lists RouterService, the health service and reflection itself."""
    response = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services="*"))
    assert isinstance(response, reflection_pb2.ServerReflectionResponse)
    names = {service.name for service in response.list_services_response.service}
    assert ROUTER in names
    assert "grpc.health.v1.Health" in names
    assert "grpc.reflection.v1alpha.ServerReflection" in names


def test_reflection_describes_router_service(channel: grpc.Channel) -> None:
    """Reflection returns router.proto for the RouterService symbol, with every method the
    compiled service has (an RPC added later included) and its Timestamp dependency, so generic
    clients (grpcurl) can call it."""
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=ROUTER)
    response = _reflect(channel, request)
    assert isinstance(response, reflection_pb2.ServerReflectionResponse)
    files = {}
    for data in response.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(data)
        files[proto.name] = proto
    router = files["banditroute/v1/router.proto"]
    assert router.package == "banditroute.v1"
    assert "google/protobuf/timestamp.proto" in router.dependency
    (service,) = router.service
    compiled = pb.DESCRIPTOR.services_by_name["RouterService"].methods
    assert [m.name for m in service.method] == [m.name for m in compiled]
    assert {"Route", "Feedback", "ListModels", "GetStats", "ResetModelHealth", "ReloadConfig"} <= {
        m.name for m in service.method
    }


V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def test_reflection_v1_answers_like_v1alpha(channel: grpc.Channel) -> None:
    """A client of grpc.reflection.v1 (grpcurl and most current tools ask for it first) lists
    the services, both reflection versions among them, and gets router.proto for the
    RouterService symbol. v1's messages are v1alpha's under a new package, the same on the
    wire, so v1alpha's message classes make the v1 request here."""
    call = channel.stream_stream(
        V1_METHOD,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    listed, described = list(
        call(
            iter([
                reflection_pb2.ServerReflectionRequest(list_services="*"),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=ROUTER),
            ]),
            timeout=10,
        )
    )  # fmt: skip
    names = {service.name for service in listed.list_services_response.service}
    assert {ROUTER, "grpc.reflection.v1.ServerReflection"} <= names
    assert "grpc.reflection.v1alpha.ServerReflection" in names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(data).name
        for data in described.file_descriptor_response.file_descriptor_proto
    ]
    assert "banditroute/v1/router.proto" in files
