"""The tamper-evident audit log a served workload leaves: one hash-chained record per decision
and per acknowledged feedback, which ``banditroute.audit.verify`` and ``banditroute audit
verify`` accept as written, and reject once a record is edited or removed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest

from banditroute.audit import open_audit_log, verify
from banditroute.server.app import Service
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb

CLI_TIMEOUT_S = 60.0
ACME_KEY = "key-acme-audit"
CONFIG: dict[str, Any] = {
    "tenants": [{"name": "acme", "api_key_sha256": [hash_key(ACME_KEY)]}],
}


def _workload(service: Service, api: Callable[..., Any]) -> tuple[list[str], list[str]]:
    """Five decisions (one replayed, two rejected routes) and three feedbacks (one rejected,
    one duplicate), from two tenants; returns the decision ids and the fed-back ids."""
    default, acme = api(service), api(service, ACME_KEY)
    decisions = [default.route(request_id="same").decision_id]
    assert default.route(request_id="same").replayed
    decisions += [acme.route(prompt=f"Question {i}: why is the sky blue?").decision_id
                  for i in range(3)]  # fmt: skip
    decisions.append(default.route(prompt="Reach me at ann.lee@example.com").decision_id)
    default.fails("Route", pb.RouteRequest(prompt=""), grpc.StatusCode.INVALID_ARGUMENT)
    acme.fails("Route", pb.RouteRequest(prompt="hi", max_cost_usd=1e-12),
               grpc.StatusCode.FAILED_PRECONDITION)  # fmt: skip
    default.feedback(decision_id=decisions[0], quality=0.8, cost_usd=0.001, latency_ms=900.0)
    acme.feedback(decision_id=decisions[1], status=pb.OUTCOME_STATUS_ERROR)
    acme.feedback(decision_id=decisions[1], quality=1.0)
    bad = pb.FeedbackRequest(decision_id=decisions[2], quality=2.0)
    acme.fails("Feedback", bad, grpc.StatusCode.INVALID_ARGUMENT)
    return decisions, [decisions[0], decisions[1], decisions[1]]


def _verify(path: Path) -> Any:
    source = open_audit_log(path)
    try:
        return verify(source.connection)
    finally:
        source.connection.close()


def _cli(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "banditroute.cli", "audit", "verify", "--log", str(path)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def test_served_workload_leaves_a_verifiable_audit_chain(
    start_service: Callable[..., Service], api: Callable[..., Any], tmp_path: Path
) -> None:
    """After routes and feedback and stop, the log's audit chain verifies with exactly one
    record per logged decision and per acknowledged feedback (replays and rejected calls add
    none), in order, each naming its tenant and decision; no record holds the prompt text.
    ``python -m banditroute.cli audit verify --log FILE`` exits 0 and prints the head."""
    service = start_service(CONFIG)
    decisions, fed_back = _workload(service, api)
    service.stop()
    path = service.settings.log.path

    result = _verify(path)
    assert result.ok, result.problem
    assert result.records == len(decisions) + len(fed_back)
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT kind, decision_id, tenant, CAST(payload AS VARCHAR) FROM audit ORDER BY seq"
        ).fetchall()
        logged = {r[0] for r in con.execute("SELECT decision_id FROM decisions").fetchall()}
    assert [r[1] for r in rows if r[0] == "decision"] == decisions
    assert [r[1] for r in rows if r[0] == "feedback"] == fed_back
    assert logged == set(decisions)
    assert {r[2] for r in rows} == {"default", "acme"}
    assert not any("ann.lee" in json.dumps(r) for r in rows)
    assert result.head is not None
    assert result.head[0] == result.records

    run = _cli(path)
    assert run.returncode == 0, run.stderr
    assert f"head: {result.head[0]}:{result.head[1]}" in run.stdout


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "cli"),
    [
        ('UPDATE audit SET payload = \'{"model": "claude-v1"}\' WHERE seq = 2', 2, True),
        # A duplicate key (DuckDB reads the first, Python's json the last) in feedback 6.
        (
            "UPDATE audit SET payload = "
            "('{\"quality\":0.0123,' || substr(payload::varchar, 2))::json WHERE seq = 6",
            6,
            True,
        ),
        (
            "UPDATE audit SET payload = replace(payload::varchar, ',', ', ')::json WHERE seq = 6",
            6,
            False,
        ),
        ("UPDATE audit SET tenant = 'acme' WHERE seq = 1", 1, False),
        ("DELETE FROM audit WHERE seq = 3", 3, False),
    ],
)
def test_tampered_copy_is_detected(
    start_service: Callable[..., Service],
    api: Callable[..., Any],
    tmp_path: Path,
    *,
    tamper: str,
    bad_seq: int,
    cli: bool,
) -> None:
    """Editing a record's payload (values, a duplicate key, whitespace only) or tenant, or
    deleting a record, in a copy of the log is detected at that record by verify (and the
    CLI, run on two cases only to save its start-up time, exits 1 naming its seq); the
    original still verifies."""
    service = start_service(CONFIG)
    _workload(service, api)
    service.stop()
    copy = tmp_path / "tampered.duckdb"
    shutil.copyfile(service.settings.log.path, copy)
    with duckdb.connect(str(copy)) as con:
        con.execute(tamper)

    result = _verify(copy)
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    if cli:
        run = _cli(copy)
        assert run.returncode == 1, run.stdout
        assert f"seq {bad_seq}" in run.stderr
    assert _verify(service.settings.log.path).ok


_FIRST = "(SELECT min(decision_id) FROM decisions)"


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE feedback SET quality = 0.0123 WHERE quality = 0.8",
        f"UPDATE decisions SET model = 'forged' WHERE decision_id = {_FIRST}",
        "UPDATE decisions SET features = (' ' || features::VARCHAR)::JSON "
        f"WHERE decision_id = {_FIRST}",
        f"DELETE FROM decisions WHERE decision_id = {_FIRST}",
        "DELETE FROM feedback",
        "INSERT INTO feedback SELECT * FROM feedback",
        "INSERT INTO decisions SELECT * FROM decisions LIMIT 1",
        "UPDATE settlements SET reward = 0.99",
        f"UPDATE settlements SET action = action || '!' WHERE decision_id = {_FIRST}",
        f"DELETE FROM settlements WHERE decision_id = {_FIRST}",
        "INSERT INTO settlements SELECT * FROM settlements LIMIT 1",
    ],
)
def test_tampered_logged_rows_are_detected(
    start_service: Callable[..., Service], api: Callable[..., Any], tmp_path: Path, tamper: str
) -> None:
    """Each logged row (decision, feedback, settlement) is chained by its audit record's row
    digest: in a copy of the log, an edited value (down to whitespace in a JSON column), a
    deleted row, all feedback deleted, or a duplicated row makes verify fail; the original
    (with a settlement for every decision) still verifies."""
    service = start_service(CONFIG)
    decisions, _ = _workload(service, api)
    window = service.settings.reward.window_s
    assert service.router.expire(now=time.time() + window + 60) == len(decisions)
    service.stop()
    copy = tmp_path / "tampered.duckdb"
    shutil.copyfile(service.settings.log.path, copy)
    with duckdb.connect(str(copy)) as con:
        assert con.execute(tamper).fetchall() != [(0,)]  # the statement changed something

    result = _verify(copy)
    assert not result.ok
    assert result.problem is not None
    original = _verify(service.settings.log.path)
    assert original.ok, original.problem
    with duckdb.connect(str(service.settings.log.path), read_only=True) as con:
        kinds = dict(con.execute("SELECT kind, count(*) FROM audit GROUP BY kind").fetchall())
    assert kinds.get("settlement") == len(decisions)


def test_restart_continues_the_chain(
    start_service: Callable[..., Service], api: Callable[..., Any], tmp_path: Path
) -> None:
    """A second service on the same log continues the chain from the first one's head: the
    whole log verifies with the records of both runs."""
    log = {"path": str(tmp_path / "shared.duckdb")}
    first = start_service({**CONFIG, "log": log})
    decisions, fed_back = _workload(first, api)
    first.stop()
    second = start_service({**CONFIG, "log": log})
    decision = api(second).route()
    api(second).feedback(decision_id=decision.decision_id, quality=0.5)
    second.stop()
    result = _verify(Path(log["path"]))
    assert result.ok, result.problem
    assert result.records == len(decisions) + len(fed_back) + 2


def test_cli_rejects_a_missing_log(tmp_path: Path) -> None:
    """``audit verify`` on a path that does not exist exits 2 naming --log."""
    run = _cli(tmp_path / "nothing.duckdb")
    assert run.returncode == 2
    assert "--log" in run.stderr
