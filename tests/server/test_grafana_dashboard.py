"""The shipped Grafana dashboard (examples/grafana/banditroute.json) and the README's PromQL
graph what a server's metrics endpoint serves."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from api_client import CALL_TIMEOUT_S
from prometheus_client.parser import text_string_to_metric_families

from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "examples" / "grafana" / "banditroute.json"
_METRIC = re.compile(r"\bbanditroute_[a-z_]+")


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def _served_names(service: Service) -> set[str]:
    """The sample names a scrape of ``service`` returns after one routed and reported call."""
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.RouterServiceStub(channel)
        decision = stub.Route(pb.RouteRequest(prompt="Name a colour."), timeout=CALL_TIMEOUT_S)
        stub.Feedback(
            pb.FeedbackRequest(decision_id=decision.decision_id, quality=1.0, cost_usd=0.001),
            timeout=CALL_TIMEOUT_S,
        )
    url = f"http://{service.metrics_address}/metrics"
    with urllib.request.urlopen(url, timeout=CALL_TIMEOUT_S) as reply:
        text = reply.read().decode("utf-8")
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_dashboard_and_readme_queries_name_only_served_metrics(
    make_service: Callable[..., Service],
) -> None:
    """Every metric the dashboard's panels and the README's Grafana examples query is one a
    server with --metrics-port serves (a renamed metric would leave a panel empty), and every
    panel reads the dashboard's Prometheus data source variable (chosen on import)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    served = _served_names(make_service(metrics_port=metrics_port))
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    readme = (ROOT / "README.md").read_text("utf-8")
    grafana = readme[readme.index("In Grafana") : readme.index("## Configuration")]
    queried = {name for expr in _exprs(dashboard) for name in _METRIC.findall(expr)}
    queried |= set(_METRIC.findall(grafana))
    assert len(queried) >= 8
    assert queried <= served, sorted(queried - served)
    variable = {v["name"]: v for v in dashboard["templating"]["list"]}["datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in dashboard["panels"]:
        sources = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        assert all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources)
