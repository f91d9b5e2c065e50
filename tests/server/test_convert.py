"""The proto <-> domain conversion of Route's answer."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from banditroute.decisions import Decision
from banditroute.server.convert import route_response


def _decision(time: float) -> Decision:
    return Decision(
        decision_id="d" * 32,
        time=time,
        model="b",
        probability=0.7,
        ranking=(("b", 0.7), ("a", 0.2), ("c", 0.1)),
        fallback_models=("a", "c"),
        policy_version="vw:x:3",
        objective="balanced",
        explored=False,
        exclusions=(("z", "candidate_models", "not a candidate"),),
        rule="code-rule",
        arm="treatment",
        data_class="pii",
        language="fr",
    )


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_decide_time_is_the_timestamp_from_nanoseconds(time: float) -> None:
    """decide_time carries exactly what Timestamp.FromNanoseconds makes of the decision's
    time, fraction of a second included."""
    expected = Timestamp()
    expected.FromNanoseconds(int(time * 1e9))
    assert route_response(_decision(time)).decide_time == expected


def test_every_decision_field_reaches_the_response() -> None:
    """Ranking, fallbacks, exclusions and the scalar fields are copied in order."""
    response = route_response(_decision(1_700_000_000.25))
    assert [(r.model, r.probability) for r in response.ranking] == [
        ("b", 0.7), ("a", 0.2), ("c", 0.1),
    ]  # fmt: skip
    assert list(response.fallback_models) == ["a", "c"]
    assert [(e.model, e.constraint, e.reason) for e in response.exclusions] == [
        ("z", "candidate_models", "not a candidate")
    ]
    assert (response.decision_id, response.model, response.probability) == ("d" * 32, "b", 0.7)
    assert (response.policy_version, response.objective, response.rule) == (
        "vw:x:3", "balanced", "code-rule",
    )  # fmt: skip
    assert (response.experiment_arm, response.explored, response.replayed) == (
        "treatment", False, False,
    )  # fmt: skip
    assert (response.data_classification, response.language) == ("pii", "fr")
    assert response.decide_time.seconds == 1_700_000_000
    assert abs(response.decide_time.nanos - 250_000_000) < 1_000  # float seconds: ~0.1 µs
