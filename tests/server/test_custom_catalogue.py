"""A custom catalogue without a model for personal data says so, at start-up and in the error.

Custom [[models]] entries take only "public" data unless their data_classes say otherwise, so
a catalogue written without data_classes refused every prompt holding an e-mail address with
a FAILED_PRECONDITION that did not say what to configure, and nothing warned at start-up.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from fault_helpers import ServerLauncher
from structlog.testing import capture_logs

from banditroute.catalog import Catalog, ModelSpec
from banditroute.catalog_checks import unserved_data_classes, warn_unserved_data_classes
from banditroute.config import load_settings
from banditroute.policies.factory import build_policy
from banditroute.reload import reload_from_source
from banditroute.router import Router
from banditroute.store.memory import MemoryLog
from banditroute.v1 import router_pb2 as pb

PUBLIC_ONLY = """
[[models]]
id = "gpt-4o-mini"
provider = "openai"
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.6

[[models]]
id = "claude-haiku"
provider = "anthropic"
input_usd_per_mtok = 0.8
output_usd_per_mtok = 4.0
"""
EMAIL_PROMPT = "Please reply to jane.doe@example.com about the invoice."


def _catalogue(*classes: frozenset[str]) -> Catalog:
    return Catalog(
        tuple(ModelSpec(f"m{i}", "p", 1.0, 1.0, data_classes=c) for i, c in enumerate(classes))
    )


def test_unserved_classes_are_found_and_warned_about() -> None:
    """No model accepting "pii" is reported (and logged with the key to set); one is enough;
    the default catalogue has its self-hosted pii models and gives no warning."""
    public = frozenset({"public"})
    assert unserved_data_classes(_catalogue(public, public)) == ("pii",)
    assert unserved_data_classes(_catalogue(public, frozenset({"public", "pii"}))) == ()
    assert unserved_data_classes(load_settings(None).catalog) == ()
    with capture_logs() as logs:
        warn_unserved_data_classes(_catalogue(public))
        warn_unserved_data_classes(load_settings(None).catalog)
    assert len(logs) == 1
    assert logs[0]["event"] == "no_model_accepts_data_class"
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["data_class"] == "pii"
    assert "data_classes" in logs[0]["fix"]
    assert "[[models]]" in logs[0]["fix"]


def test_server_start_warns_when_no_model_accepts_personal_data(
    launcher: ServerLauncher, tmp_path: Path
) -> None:
    """`banditroute serve` with a catalogue of public-only models logs the warning before
    `listening`, naming the data class and data_classes."""
    config = tmp_path / "models.toml"
    config.write_text(
        f'[server]\nport = 0\n[log]\npath = "{tmp_path / "log.duckdb"}"\n{PUBLIC_ONLY}',
        encoding="utf-8",
    )
    server = launcher.start(config)
    lines = [line for line in server.log_text().splitlines() if "no_model_accepts" in line]
    assert len(lines) == 1
    assert "data_class=pii" in lines[0]
    assert "data_classes" in lines[0]
    assert server.terminate() == 0


def test_refusal_of_personal_data_names_the_key_to_set(
    start_service: Callable[..., Any], api: Callable[..., Any]
) -> None:
    """A prompt with an e-mail address on a public-only catalogue is FAILED_PRECONDITION whose
    message names data_classes and [[models]] (and never quotes the address); a prompt
    without personal data is routed as usual."""
    client = api(start_service(tomllib.loads(PUBLIC_ONLY)))
    request = pb.RouteRequest(prompt=EMAIL_PROMPT)
    details = client.fails("Route", request, grpc.StatusCode.FAILED_PRECONDITION)
    assert details.startswith("data_classification: no model satisfies the request")
    assert "[[models]]" in details
    assert 'data_classes = ["public", "internal", "pii"]' in details
    assert "example.com" not in details
    assert client.route().model in {"gpt-4o-mini", "claude-haiku"}


def test_a_reload_to_such_a_catalogue_warns(tmp_path: Path) -> None:
    """A reload (SIGHUP or ReloadConfig) that installs a catalogue without a pii model logs
    the same warning; one that keeps a pii model does not."""
    config = tmp_path / "models.toml"
    with_pii = PUBLIC_ONLY + 'data_classes = ["public", "internal", "pii"]\n'
    config.write_text(with_pii, encoding="utf-8")
    settings = load_settings(config)
    router = Router(
        settings, build_policy(settings.policy, semantic=settings.features.semantic), MemoryLog()
    )
    with capture_logs() as logs:
        reload_from_source(router)
    assert [e for e in logs if e["event"] == "no_model_accepts_data_class"] == []
    config.write_text(PUBLIC_ONLY, encoding="utf-8")
    with capture_logs() as logs:
        reload_from_source(router)
    warnings = [e for e in logs if e["event"] == "no_model_accepts_data_class"]
    assert [e["data_class"] for e in warnings] == ["pii"]
