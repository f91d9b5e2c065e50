"""A Node.js client (@grpc/grpc-js + @grpc/proto-loader, proto loaded at run time) talks to the
in-process service: Route, Feedback and an error status all cross the language boundary."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from banditroute.config import settings_from_mapping
from banditroute.server.app import Service, build_service

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("client.mjs")
NODE_PACKAGES = ("@grpc/grpc-js", "@grpc/proto-loader")
TIMEOUT_S = 30


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """A started in-process service on a free loopback port, its files under tmp_path."""
    settings = settings_from_mapping(
        {
            "server": {"port": 0},
            "log": {"path": str(tmp_path / "log.duckdb")},
            "policy": {"snapshot_path": str(tmp_path / "policy.snapshot")},
        }
    )
    service = build_service(settings)
    service.start()
    yield service
    service.stop()


@pytest.fixture
def node() -> str:
    """The node executable, with the client's packages installed in node_modules."""
    executable = shutil.which("node")
    if executable is None:
        pytest.fail("node is not on PATH: install Node.js (20 or later) to run the polyglot test")
    missing = [p for p in NODE_PACKAGES if not (ROOT / "node_modules" / p).is_dir()]
    if missing:
        pytest.fail(
            f"node_modules lacks {', '.join(missing)}: run `make test` (or `npm ci` in the "
            "repository root)"
        )
    return executable


def run_client(node: str, service: Service) -> dict[str, Any]:
    """Run client.mjs against the service and parse the JSON it prints."""
    result = subprocess.run(
        [node, str(CLIENT), f"127.0.0.1:{service.port}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"node client failed:\n{result.stderr}"
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_node_client_routes_and_gives_feedback(node: str, service: Service) -> None:
    """From Node: Route answers a model in its ranking with the matching probability and a
    decide_time (int64 seconds as a string); Feedback is LEARNED with the finite reward its
    optional fields (quality, latency, tokens) give under the balanced objective; an
    empty prompt fails with INVALID_ARGUMENT (code 3) and details naming prompt."""
    answer = run_client(node, service)
    route, feedback, error = answer["route"], answer["feedback"], answer["error"]

    ranking = {entry["model"]: entry["probability"] for entry in route["ranking"]}
    assert route["model"] in ranking
    assert route["probability"] == ranking[route["model"]]
    assert math.isclose(sum(ranking.values()), 1.0, abs_tol=1e-9)
    assert route["fallback_models"] == [m for m in ranking if m != route["model"]]
    assert route["decision_id"]
    assert route["policy_version"].startswith("costaware:")
    assert route["replayed"] is False
    assert int(route["decide_time"]["seconds"]) > 1_600_000_000

    assert feedback["disposition"] == "FEEDBACK_DISPOSITION_LEARNED"
    assert isinstance(feedback["reward"], float | int)
    assert math.isfinite(feedback["reward"])
    # The optional fields arrived set: quality, latency, and cost priced from the tokens.
    chosen = service.settings.catalog.get(route["model"])
    expected = 0.75 - 50.0 * chosen.price(120, 80) - 0.0001 * 420.5
    assert feedback["reward"] == pytest.approx(expected)
    assert feedback["feedback_count"] == 1

    assert error is not None, "an empty prompt was accepted"
    assert error["code"] == 3  # INVALID_ARGUMENT
    assert error["details"].startswith("prompt:")
