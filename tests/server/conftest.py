"""In-process gRPC fixtures: a started banditroute service on a free loopback port, a channel
and stubs to it, and helpers to read its DuckDB log after it stops.

Every service writes its log and policy snapshot under the test's ``tmp_path`` and is stopped
at teardown (stopping twice is harmless, so a test may stop it itself to read the log).
"""

from __future__ import annotations

import copy
import itertools
import tomllib
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest
from api_client import CALL_TIMEOUT_S, ApiClient, fails_with
from fault_helpers import ServerLauncher

from banditroute.config import settings_from_mapping
from banditroute.server.app import Service, build_service
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[ServerLauncher]:
    """Starts ``banditroute serve`` processes; kills any still running at teardown."""
    servers = ServerLauncher(tmp_path)
    try:
        yield servers
    finally:
        servers.close_all()


SMALL_PROMPT_LIMIT = 2000
"""server.max_prompt_chars of the default ``service`` fixture: small, so the limit is testable."""


class _Services:
    """Builds services with ``settings_from_mapping`` and starts them, the log and policy
    snapshot of the n-th one at ``tmp_path / log_name.format(n)`` and ``snapshot_name`` unless
    its config names them; ``stop_all`` stops them (the fixtures' teardown)."""

    def __init__(self, tmp_path: Path, log_name: str, snapshot_name: str) -> None:
        self.tmp_path = tmp_path
        self.log_name = log_name
        self.snapshot_name = snapshot_name
        self.started: list[Service] = []
        self._counter = itertools.count()  # a build that fails uses up its index too

    def start(self, config: Mapping[str, Any]) -> Service:
        index = next(self._counter)
        defaults: dict[str, dict[str, Any]] = {
            "server": {"host": "127.0.0.1", "port": 0},
            "log": {"path": str(self.tmp_path / self.log_name.format(index))},
            "policy": {"snapshot_path": str(self.tmp_path / self.snapshot_name.format(index))},
        }
        data: dict[str, Any] = copy.deepcopy(dict(config))
        for name, values in defaults.items():
            data[name] = {**values, **data.get(name, {})}
        service = build_service(settings_from_mapping(data))
        self.started.append(service)
        service.start()
        return service

    def stop_all(self) -> None:
        for service in self.started:
            service.stop()


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Build and start a service; keyword arguments override [server] settings, ``sections``
    other sections (for example ``{"reward": {"window_s": 0.2}}``)."""
    services = _Services(tmp_path, "log{}.duckdb", "policy{}.snapshot")

    def make(sections: Mapping[str, Mapping[str, Any]] | None = None, **server: Any) -> Service:
        config = dict(sections or {})
        config["server"] = {**server, **config.get("server", {})}
        return services.start(config)

    yield make
    services.stop_all()


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    """A started service whose prompt limit is SMALL_PROMPT_LIMIT characters."""
    return make_service(max_prompt_chars=SMALL_PROMPT_LIMIT)


@pytest.fixture
def connect() -> Iterator[Callable[[Service], grpc.Channel]]:
    """Open a channel to a started service on 127.0.0.1 (closed at teardown).

    No ``channel_ready_future``: its connectivity polling makes ``close`` take 200 ms, and the
    server is already listening when the fixture returns.
    """
    channels: list[grpc.Channel] = []

    def open_channel(service: Service) -> grpc.Channel:
        channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        channel.close()


@pytest.fixture
def channel(service: Service, connect: Callable[[Service], grpc.Channel]) -> grpc.Channel:
    """A channel to the ``service`` fixture."""
    return connect(service)


@pytest.fixture
def stub(channel: grpc.Channel) -> pb_grpc.RouterServiceStub:
    """A RouterService stub on the ``service`` fixture."""
    return pb_grpc.RouterServiceStub(channel)


@pytest.fixture
def expect_error() -> Callable[..., str]:
    """Call ``method(request)``, assert it fails with ``code``, and return the details text."""

    def check(method: Any, request: Any, code: grpc.StatusCode) -> str:
        return fails_with(lambda: method(request, timeout=CALL_TIMEOUT_S), code)

    return check


@pytest.fixture
def route(stub: pb_grpc.RouterServiceStub) -> Callable[..., pb.RouteResponse]:
    """Route a request built from keyword arguments (``prompt`` defaults to a short question)."""

    def call(**fields: Any) -> pb.RouteResponse:
        if "messages" not in fields:
            fields.setdefault("prompt", "What is the capital of France?")
        response: pb.RouteResponse = stub.Route(pb.RouteRequest(**fields), timeout=CALL_TIMEOUT_S)
        return response

    return call


@pytest.fixture
def feedback(stub: pb_grpc.RouterServiceStub) -> Callable[..., pb.FeedbackResponse]:
    """Send a FeedbackRequest built from keyword arguments."""

    def call(**fields: Any) -> pb.FeedbackResponse:
        response: pb.FeedbackResponse = stub.Feedback(
            pb.FeedbackRequest(**fields), timeout=CALL_TIMEOUT_S
        )
        return response

    return call


@pytest.fixture
def stopped_log() -> Iterator[Callable[[Service], duckdb.DuckDBPyConnection]]:
    """Stop a service and open its DuckDB log file read-only (closed at teardown)."""
    connections: list[duckdb.DuckDBPyConnection] = []

    def open_log(service: Service) -> duckdb.DuckDBPyConnection:
        service.stop()
        connection = duckdb.connect(str(service.settings.log.path), read_only=True)
        connections.append(connection)
        return connection

    yield open_log
    for connection in connections:
        connection.close()


# -- production features (issue 5): tenants, keys, TLS -------------------------------------------


def _default_document() -> dict[str, Any]:
    text = resources.files("banditroute").joinpath("default_config.toml").read_text("utf-8")
    return tomllib.loads(text)


@pytest.fixture
def catalogue() -> list[dict[str, Any]]:
    """A fresh copy of the default ``[[models]]`` entries, to edit and pass back as ``models``
    (a ``[[models]]`` list in a config replaces the whole catalogue)."""
    models: list[dict[str, Any]] = copy.deepcopy(_default_document()["models"])
    return models


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[[Mapping[str, Any]], Service]]:
    """Build a service with ``settings_from_mapping(config)`` and start it on a free loopback
    port, its log and snapshots under ``tmp_path`` unless the config names them; stopped at
    teardown."""
    services = _Services(tmp_path, "prod{}.duckdb", "prod{}.snapshot")
    yield services.start
    services.stop_all()


@pytest.fixture
def api() -> Iterator[Callable[..., ApiClient]]:
    """``api(service, key=None, header="x-api-key", credentials=None)``: a client of a started
    service on 127.0.0.1 sending ``key`` in ``header`` (``authorization`` sends ``Bearer KEY``);
    with ``credentials`` the channel is a TLS channel (target name ``localhost``). Channels are
    closed at teardown."""
    channels: list[grpc.Channel] = []

    def make(
        service: Service,
        key: str | None = None,
        *,
        header: str = "x-api-key",
        credentials: grpc.ChannelCredentials | None = None,
    ) -> ApiClient:
        target = f"127.0.0.1:{service.port}"
        if credentials is None:
            channel = grpc.insecure_channel(target)
        else:
            options = (("grpc.ssl_target_name_override", "localhost"),)
            channel = grpc.secure_channel(target, credentials, options=options)
        channels.append(channel)
        metadata: tuple[tuple[str, str], ...] = ()
        if key is not None:
            value = f"Bearer {key}" if header == "authorization" else key
            metadata = ((header, value),)
        return ApiClient(channel, metadata)

    yield make
    for channel in channels:
        channel.close()
