"""ReloadConfig: the server reads its configuration file again and applies it while serving
(models added, removed, re-priced; tenants and keys), keeping what it learned; an invalid file,
a restart-only change or a caller without an admin key changes nothing."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from api_client import ApiClient
from fault_helpers import ServerLauncher, ServerProcess

from banditroute.config import load_settings
from banditroute.server.app import Service, build_service
from banditroute.server.workers import Supervisor
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb

ADMIN_KEY, ACME_KEY, NEW_KEY = "reload-admin", "reload-acme", "reload-new"
PROMPT = "What is the capital of France?"
PRICES: dict[str, tuple[float, float]] = {
    "alpha": (1.0, 2.0), "beta": (1.0, 2.0), "gamma": (1.0, 2.0),
}  # fmt: skip
FAILED = grpc.StatusCode.FAILED_PRECONDITION


class ConfigFile:
    """The test server's TOML file, rewritten by ``write`` with another catalogue or keys."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "banditroute.toml"
        self.tmp_path = tmp_path

    def write(
        self,
        models: Mapping[str, tuple[float, float]],
        *,
        kind: str = "costaware",
        port: int = 0,
        required: bool = False,
        tenants: Mapping[str, str] | None = None,
        extra: str = "",
        server: str = "",
    ) -> None:
        """A config with ``models`` (id: input and output price), policy ``kind``, an admin
        key, and ``tenants`` (name: API key); ``server`` adds lines to [server]."""
        lines = [
            f'[server]\nhost = "127.0.0.1"\nport = {port}\n{server}',
            f'[log]\npath = "{self.tmp_path / "log.duckdb"}"',
            f'[policy]\nkind = "{kind}"\nsnapshot_path = "{self.tmp_path / "policy.snapshot"}"',
            f"[auth]\nrequired = {'true' if required else 'false'}\n"
            f'admin_key_sha256 = ["{hash_key(ADMIN_KEY)}"]',
            extra,
        ]
        for name, key in (tenants or {}).items():
            lines.append(f'[[tenants]]\nname = "{name}"\napi_key_sha256 = ["{hash_key(key)}"]')
        for model, (input_price, output_price) in models.items():
            lines.append(
                f'[[models]]\nid = "{model}"\nprovider = "p-{model}"\n'
                f"input_usd_per_mtok = {input_price}\noutput_usd_per_mtok = {output_price}"
            )
        self.path.write_text("\n\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def config(tmp_path: Path) -> ConfigFile:
    """The server's configuration file (write it before starting the server)."""
    return ConfigFile(tmp_path)


@pytest.fixture
def serve(config: ConfigFile) -> Iterator[Callable[[], Service]]:
    """Start a service from ``config``'s file (so a reload reads that file); stopped at
    teardown."""
    started: list[Service] = []

    def start() -> Service:
        service = build_service(load_settings(config.path))
        started.append(service)
        service.start()
        return service

    yield start
    for service in started:
        service.stop()


def _reload(admin: ApiClient) -> pb.ReloadConfigResponse:
    response: pb.ReloadConfigResponse = admin.call("ReloadConfig", pb.ReloadConfigRequest())
    return response


def _prices(client: ApiClient) -> dict[str, tuple[float, float]]:
    response: pb.ListModelsResponse = client.call("ListModels", pb.ListModelsRequest())
    return {m.model: (m.input_usd_per_mtok, m.output_usd_per_mtok) for m in response.models}


def test_an_added_model_is_listed_and_routable_after_reload(
    config: ConfigFile, serve: Callable[[], Service], api: Callable[..., ApiClient]
) -> None:
    """gamma, added to the file, is unknown until ReloadConfig; then the response lists it as
    added, ListModels shows it and Route with candidate_models=[gamma] chooses it."""
    config.write({"alpha": PRICES["alpha"], "beta": PRICES["beta"]})
    service = serve()
    client, admin = api(service), api(service, ADMIN_KEY)
    assert "unknown model" in client.fails(
        "Route", pb.RouteRequest(prompt=PROMPT, candidate_models=["gamma"]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )  # fmt: skip
    config.write(PRICES)

    response = _reload(admin)

    assert list(response.models_added) == ["gamma"]
    assert list(response.models_removed) == list(response.models_changed) == []
    assert len(response.config_digest) == 16
    assert set(_prices(client)) == {"alpha", "beta", "gamma"}
    assert client.route(candidate_models=["gamma"]).model == "gamma"
    assert _reload(admin).config_digest == response.config_digest  # nothing changed since


def test_a_removed_model_is_not_chosen_and_its_pending_feedback_is_accepted(
    config: ConfigFile, serve: Callable[[], Service], api: Callable[..., ApiClient]
) -> None:
    """After gamma leaves the file and the config is reloaded, no route chooses it and naming
    it is INVALID_ARGUMENT, while the decision made for it before the reload still takes its
    feedback (LEARNED)."""
    config.write(PRICES)
    service = serve()
    client, admin = api(service), api(service, ADMIN_KEY)
    pending = client.route(candidate_models=["gamma"])
    config.write({"alpha": PRICES["alpha"], "beta": PRICES["beta"]})

    assert list(_reload(admin).models_removed) == ["gamma"]

    assert set(_prices(client)) == {"alpha", "beta"}
    chosen = {client.route(prompt=f"{PROMPT} ({index})").model for index in range(20)}
    assert chosen <= {"alpha", "beta"}
    client.fails(
        "Route", pb.RouteRequest(prompt=PROMPT, candidate_models=["gamma"]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )  # fmt: skip
    ack = client.feedback(decision_id=pending.decision_id, model="gamma", quality=0.8)
    assert ack.disposition == pb.FEEDBACK_DISPOSITION_LEARNED


def test_a_changed_price_shows_in_list_models_and_in_max_cost(
    config: ConfigFile, serve: Callable[[], Service], api: Callable[..., ApiClient]
) -> None:
    """alpha's output price raised a hundredfold in the file: after ReloadConfig it is listed
    as changed, ListModels shows the new price, and a max_cost_usd that admitted alpha before
    now excludes it."""
    config.write(PRICES)
    service = serve()
    client, admin = api(service), api(service, ADMIN_KEY)
    cheap = {"candidate_models": ["alpha"], "max_cost_usd": 0.001}
    assert client.route(**cheap).model == "alpha"
    config.write({**PRICES, "alpha": (1.0, 200.0)})

    assert list(_reload(admin).models_changed) == ["alpha"]

    assert _prices(client)["alpha"] == (1.0, 200.0)
    details = client.fails("Route", pb.RouteRequest(prompt=PROMPT, **cheap), FAILED)
    assert "max_cost_usd" in details


@pytest.mark.parametrize("kind", ["costaware", "vw"])
def test_learning_is_kept_across_a_reload_that_adds_a_model(
    config: ConfigFile, serve: Callable[[], Service], api: Callable[..., ApiClient], kind: str
) -> None:
    """Feedback teaches the policy to prefer alpha to beta; a reload adding gamma keeps the
    preference exactly: the same policy version and the same probabilities over alpha and
    beta before and after."""
    config.write({"alpha": PRICES["alpha"], "beta": PRICES["beta"]}, kind=kind)
    service = serve()
    client, admin = api(service), api(service, ADMIN_KEY)
    for _ in range(30):
        for model, quality in (("alpha", 1.0), ("beta", 0.0)):
            decision = client.route(candidate_models=[model])
            client.feedback(decision_id=decision.decision_id, quality=quality)
    pair = {"candidate_models": ["alpha", "beta"]}
    before = client.route(**pair)
    probabilities = {p.model: p.probability for p in before.ranking}
    assert probabilities["alpha"] > probabilities["beta"]
    config.write(PRICES, kind=kind)

    assert list(_reload(admin).models_added) == ["gamma"]

    after = client.route(**pair)
    assert after.policy_version == before.policy_version
    assert {p.model: p.probability for p in after.ranking} == pytest.approx(probabilities)
    assert "gamma" in {p.model for p in client.route().ranking}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[reward\nwindow_s = 1", "config"),
        ('[reward]\nwindow_s = "soon"', "reward.window_s"),
        ("[health]\nbreaker = 1", "health"),
        ("[languages]\nrequire_tagged = 3", "languages.require_tagged"),
    ],
)
def test_an_invalid_file_is_refused_and_the_old_settings_keep_serving(
    config: ConfigFile,
    serve: Callable[[], Service],
    api: Callable[..., ApiClient],
    text: str,
    key: str,
) -> None:
    """A file that no longer parses or validates is FAILED_PRECONDITION naming the key, and
    nothing in it is applied: the model it adds stays unknown and routes go on as before."""
    config.write({"alpha": PRICES["alpha"], "beta": PRICES["beta"]})
    service = serve()
    client, admin = api(service), api(service, ADMIN_KEY)
    config.write(PRICES, extra=text)
    details = admin.fails("ReloadConfig", pb.ReloadConfigRequest(), FAILED)
    assert key in details
    assert "running settings stay" in details
    assert set(_prices(client)) == {"alpha", "beta"}
    assert client.route().model in {"alpha", "beta"}


@pytest.mark.parametrize(
    ("change", "key"),
    [({"port": 1}, "server.port"), ({"kind": "vw"}, "policy.kind")],
)
def test_a_restart_only_change_is_refused_naming_the_key(
    config: ConfigFile,
    serve: Callable[[], Service],
    api: Callable[..., ApiClient],
    change: dict[str, Any],
    key: str,
) -> None:
    """A file that changes server.port or policy.kind is refused whole (FAILED_PRECONDITION
    naming the key): gamma, added in the same edit, stays unknown."""
    config.write({"alpha": PRICES["alpha"], "beta": PRICES["beta"]})
    service = serve()
    client, admin = api(service), api(service, ADMIN_KEY)
    config.write(PRICES, **change)
    details = admin.fails("ReloadConfig", pb.ReloadConfigRequest(), FAILED)
    assert details.startswith(f"{key}: changes only with a restart")
    assert set(_prices(client)) == {"alpha", "beta"}


def test_reload_needs_an_admin_key_and_applies_new_keys(
    config: ConfigFile, serve: Callable[[], Service], api: Callable[..., ApiClient]
) -> None:
    """With keys required, a tenant's key gets PERMISSION_DENIED (and nothing is reloaded);
    the admin's reload applies the file, after which a tenant key added to it authenticates."""
    tenants = {"acme": ACME_KEY}
    config.write(PRICES, required=True, tenants=tenants)
    service = serve()
    acme, admin, newcomer = api(service, ACME_KEY), api(service, ADMIN_KEY), api(service, NEW_KEY)
    config.write(PRICES, required=True, tenants={**tenants, "newco": NEW_KEY})
    acme.fails("ReloadConfig", pb.ReloadConfigRequest(), grpc.StatusCode.PERMISSION_DENIED)
    newcomer.fails("ListModels", pb.ListModelsRequest(), grpc.StatusCode.UNAUTHENTICATED)

    assert "tenants.newco.api_key_sha256" in _reload(admin).keys_changed

    assert set(newcomer.models()) == set(PRICES)


def test_a_server_not_started_from_a_file_cannot_reload(
    start_service: Callable[[Mapping[str, Any]], Service], api: Callable[..., ApiClient]
) -> None:
    """Settings built in-process (not read from a file) have nothing to read again:
    FAILED_PRECONDITION naming config."""
    service = start_service({"auth": {"admin_key_sha256": [hash_key(ADMIN_KEY)]}})
    details = api(service, ADMIN_KEY).fails("ReloadConfig", pb.ReloadConfigRequest(), FAILED)
    assert details.startswith("config:")


# -- SIGHUP: a real `banditroute serve` process ----------------------------------------------------

HANG_S = 120.0
"""Longest wait for a log line or a reloaded worker: it only catches a hang."""


def _wait_for(server: ServerProcess, text: str, count: int = 1) -> str:
    """Wait (bounded) until the server's log holds ``text`` ``count`` times; return the log."""
    deadline = time.monotonic() + HANG_S
    while (log := server.log_text()).count(text) < count:
        assert server.process.poll() is None, f"server exited:\n{log}"
        assert time.monotonic() < deadline, f"no {text!r} within {HANG_S:g}s:\n{log}"
        time.sleep(0.05)
    return log


Connect = Callable[..., ApiClient]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """``connect(server, key=None)``: a client on a new connection to a server process (a
    private subchannel pool, so that with several workers SO_REUSEPORT spreads connections
    over them); closed at teardown."""
    channels: list[grpc.Channel] = []

    def make(server: ServerProcess, key: str | None = None) -> ApiClient:
        options = [("grpc.use_local_subchannel_pool", 1)]
        channel = grpc.insecure_channel(server.address, options=options)
        channels.append(channel)
        return ApiClient(channel, () if key is None else (("x-api-key", key),))

    yield make
    for channel in channels:
        channel.close()


def test_sighup_reloads_the_file_and_a_bad_file_keeps_the_old_settings(
    config: ConfigFile, tmp_path: Path, connect: Connect
) -> None:
    """`banditroute serve` reloads its file on SIGHUP: gamma, added to it, is listed and
    routable once the server logs config_reloaded (naming gamma as added); after a SIGHUP with
    an invalid file it logs config_reload_failed naming the key and serves on as before; a
    later SIGTERM still exits 0."""
    config.write({"alpha": PRICES["alpha"], "beta": PRICES["beta"]})
    launcher = ServerLauncher(tmp_path)
    try:
        server = launcher.start(config.path)
        client = connect(server)
        decision = client.route()
        config.write(PRICES)
        server.process.send_signal(signal.SIGHUP)
        log = _wait_for(server, "config_reloaded")
        assert "models_added=['gamma']" in log
        assert set(_prices(client)) == set(PRICES)
        assert client.route(candidate_models=["gamma"]).model == "gamma"
        ack = client.feedback(decision_id=decision.decision_id, quality=1.0)
        assert ack.disposition == pb.FEEDBACK_DISPOSITION_LEARNED

        config.write(PRICES, extra='[reward]\nwindow_s = "soon"')
        server.process.send_signal(signal.SIGHUP)
        log = _wait_for(server, "config_reload_failed")
        assert "key=reward.window_s" in log
        assert set(_prices(client)) == set(PRICES)
        assert client.route().model in PRICES
        assert server.terminate() == 0
    finally:
        launcher.close_all()


def test_sighup_and_reload_config_reach_every_worker(
    config: ConfigFile, tmp_path: Path, connect: Connect
) -> None:
    """With two workers, a SIGHUP to the supervisor reloads both (two config_reloaded lines;
    every connection then lists gamma), and ReloadConfig sent to one worker reloads the other
    as well (its trailing metadata says 2/2; no connection lists gamma after it is removed)."""
    workers = "workers = 2\nmerge_interval_s = 1.0\ngrace_s = 2.0"
    config.write({"alpha": PRICES["alpha"], "beta": PRICES["beta"]}, server=workers)
    launcher = ServerLauncher(tmp_path)
    try:
        server = launcher.start(config.path, timeout_s=HANG_S)
        config.write(PRICES, server=workers)
        server.process.send_signal(signal.SIGHUP)
        _wait_for(server, "config_reloaded", count=2)
        assert all(set(_prices(connect(server))) == set(PRICES) for _ in range(8))

        config.write({"alpha": PRICES["alpha"], "beta": PRICES["beta"]}, server=workers)
        admin = connect(server, ADMIN_KEY)
        response, call = admin.stub.ReloadConfig.with_call(
            pb.ReloadConfigRequest(), metadata=admin.metadata, timeout=HANG_S
        )
        assert list(response.models_removed) == ["gamma"]
        assert ("x-banditroute-workers", "2/2") in tuple(call.trailing_metadata())
        assert all(set(_prices(connect(server))) == {"alpha", "beta"} for _ in range(8))
        assert server.terminate(HANG_S) == 0
    finally:
        launcher.close_all()


def test_a_replacement_worker_reads_the_file_unless_it_cannot_apply(config: ConfigFile) -> None:
    """A worker the supervisor restarts after a crash gets the configuration file as it reads
    then (gamma added), as a restarted server would, but the supervisor's settings when the
    file is invalid or changes what only a restart can (server.port)."""
    workers = "workers = 2"
    config.write({"alpha": PRICES["alpha"], "beta": PRICES["beta"]}, server=workers)
    supervisor = Supervisor(load_settings(config.path))
    try:
        config.write(PRICES, server=workers)
        assert set(supervisor.restart_settings().catalog.ids) == set(PRICES)
        for change in ({"port": 1}, {"extra": "[reward\n"}):
            config.write(PRICES, server=workers, **change)
            assert supervisor.restart_settings() is supervisor.settings
    finally:
        supervisor.stop()
