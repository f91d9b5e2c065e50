"""Tests of candidate specs and their target distributions (``evaluation.candidates``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from replay_world import (
    LOGGING,
    MODELS,
    World,
    WrittenLog,
    make_world,
    settings_for_tests,
    task_of,
    write_log,
)

from banditroute.errors import InvalidArgument
from banditroute.evaluation.candidates import (
    PolicyInputs,
    build_policy,
    check_candidates,
    load_policy,
    parse_candidate,
    policy_distribution,
    static_distribution,
    train,
)
from banditroute.evaluation.logdata import ReplayLog, load_log
from banditroute.evaluation.objective_rewards import log_rewards, resolve_objective
from banditroute.features import extract
from banditroute.policies.base import Policy
from banditroute.policies.factory import build_costaware
from banditroute.policies.fixed import FixedPolicy
from banditroute.policies.linucb import LinUCBPolicy
from banditroute.policies.uniform import UniformPolicy
from banditroute.snapshots import save_snapshot
from banditroute.store.reader import open_log


@pytest.fixture(scope="module")
def restricted(tmp_path_factory: pytest.TempPathFactory) -> WrittenLog:
    """A log where every third request excluded the ``large`` model."""
    path = tmp_path_factory.mktemp("restricted") / "log.duckdb"
    return write_log(path, make_world(), 150, seed=4, exclude_every=3)


@pytest.fixture(scope="module")
def restricted_log(restricted: WrittenLog) -> ReplayLog:
    """The restricted log loaded with features."""
    return load_log(open_log(restricted.path), with_features=True)


@pytest.mark.parametrize(
    ("text", "kind", "detail"),
    [
        ("logged", "logged", None),
        (" uniform ", "uniform", None),
        ("fixed:large", "fixed", "large"),
        ("fixed:meta/llama-2-70b-chat", "fixed", "meta/llama-2-70b-chat"),
        ("vw", "vw", ()),
        ("vw:--cb_explore_adf --epsilon 0.1", "vw", ("--cb_explore_adf", "--epsilon", "0.1")),
        ("linucb", "linucb", ()),
        ("linucb:alpha=0.2,epsilon=0.1", "linucb", (("alpha", 0.2), ("epsilon", 0.1))),
    ],
)
def test_valid_specs_parse(text: str, kind: str, detail: object) -> None:
    """Each spec form parses to its kind and settings."""
    spec = parse_candidate(text)
    assert spec.kind == kind
    if kind == "fixed":
        assert spec.model == detail
    elif kind == "vw":
        assert spec.vw_args == detail
    elif kind == "linucb":
        assert spec.linucb == detail
    assert spec.trained == (kind in ("vw", "linucb"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a candidate spec"),
        ("greedy", "is not a candidate spec"),
        ("fixed", "expected fixed:MODEL"),
        ("fixed:", "expected fixed:MODEL"),
        ("logged:x", "takes no settings"),
        ("linucb:gamma=1", "KEY in alpha, epsilon"),
        ("linucb:alpha=x", "is not a number"),
        ("linucb:epsilon=2", "epsilon in"),
        ("vw:--epsilon 'unclosed", "quotation"),
        ("snapshot:", "expected snapshot:PATH"),
        ("snapshot:/no/such/file", "no such file"),
    ],
)
def test_invalid_specs_name_the_argument(text: str, message: str) -> None:
    """A malformed spec raises InvalidArgument naming --candidate and saying why."""
    with pytest.raises(InvalidArgument, match=message) as caught:
        parse_candidate(text)
    assert caught.value.field == "--candidate"
    assert caught.value.message.startswith("--candidate: ")


def test_unknown_fixed_model_and_bad_vw_arguments_are_rejected() -> None:
    """fixed: with a model neither in the log nor in the catalogue, and VW arguments VW
    rejects, raise InvalidArgument naming the argument."""
    settings = settings_for_tests()
    with pytest.raises(InvalidArgument, match="unknown model 'gpt-9'") as caught:
        check_candidates([parse_candidate("fixed:gpt-9")], settings, MODELS, arg="--candidate")
    assert caught.value.field == "--candidate"
    with pytest.raises(InvalidArgument, match="Vowpal Wabbit rejected"):
        check_candidates([parse_candidate("vw:--no_such_flag")], settings, MODELS, arg="--policy")
    with pytest.raises(InvalidArgument, match="given twice"):
        check_candidates([parse_candidate("logged")] * 2, settings, MODELS, arg="--candidate")


def test_static_targets_mirror_the_policies(restricted_log: ReplayLog) -> None:
    """``uniform`` and ``fixed:MODEL`` give exactly what UniformPolicy and FixedPolicy give on
    each logged eligible list (FixedPolicy falls back to the first eligible model), and
    ``logged`` is the logged distribution."""
    log = restricted_log
    settings = settings_for_tests()
    inputs = PolicyInputs(log, settings)
    for text, policy in [
        ("uniform", UniformPolicy()),
        ("fixed:large", FixedPolicy("large")),
        ("fixed:coder", FixedPolicy("coder")),
    ]:
        static = static_distribution(parse_candidate(text), log)
        np.testing.assert_allclose(static, policy_distribution(policy, inputs))
    large = log.models.index("large")
    fixed = static_distribution(parse_candidate("fixed:large"), log)
    assert (~log.mask[:, large]).any()
    assert (fixed[~log.mask[:, large], large] == 0).all()
    np.testing.assert_array_equal(
        static_distribution(parse_candidate("logged"), log), log.logging_probs
    )


def _saved_and_replayed(policy: Policy, log: ReplayLog, tmp_path: Path) -> Path:
    """Train ``policy`` on the log, save its snapshot and check that ``snapshot:PATH``, loaded
    under the test settings, gives the same distribution on every decision; the path."""
    settings = settings_for_tests()
    inputs = PolicyInputs(log, settings)
    rewards = log_rewards(log, resolve_objective("quality=1,cost=50", settings))
    train(policy, inputs, rewards, usable=log.has_outcome)
    path = tmp_path / "policy.snapshot"
    save_snapshot(policy, path)
    loaded = load_policy(parse_candidate(f"snapshot:{path}"), settings)
    np.testing.assert_allclose(
        policy_distribution(loaded, inputs), policy_distribution(policy, inputs)
    )
    return path


def test_snapshot_candidate_reproduces_the_saved_policy(
    restricted_log: ReplayLog, tmp_path: Path
) -> None:
    """``snapshot:PATH`` restores the saved policy (same distribution on every decision), and
    never moves the user's file aside, even when it is unreadable."""
    settings = settings_for_tests()
    path = _saved_and_replayed(LinUCBPolicy(alpha=0.3, seed=1), restricted_log, tmp_path)
    broken = tmp_path / "broken.snapshot"
    broken.write_bytes(path.read_bytes()[:60])
    with pytest.raises(InvalidArgument, match="checksum mismatch"):
        load_policy(parse_candidate(f"snapshot:{broken}"), settings)
    assert broken.exists()
    foreign = tmp_path / "foreign.snapshot"
    foreign.write_bytes(b"not a snapshot")
    with pytest.raises(InvalidArgument, match="missing snapshot header"):
        load_policy(parse_candidate(f"snapshot:{foreign}"), settings)


def test_a_cost_aware_snapshot_candidate_keeps_its_semantic_weights(
    restricted_log: ReplayLog, tmp_path: Path
) -> None:
    """A snapshot of the default policy (cost-aware, reading the embedding the default settings
    log) replays as saved under the same settings: the candidate is built with the semantic
    features the settings say, so its embedding weights are not carried away."""
    settings = settings_for_tests()
    assert settings.features.semantic
    assert any(restricted_log.features(row).embedding for row in range(restricted_log.n))
    policy = build_costaware(settings.policy, seed=1, semantic=True)
    _saved_and_replayed(policy, restricted_log, tmp_path)


def test_off_policy_training_learns_a_better_policy(shared_log: WrittenLog, world: World) -> None:
    """A VW learner trained off-policy on the logged (action, reward, propensity) triples is
    better than the logging policy on the world's true rewards."""
    settings = settings_for_tests()
    log = load_log(open_log(shared_log.path), with_features=True)
    objective = resolve_objective("quality=1,cost=50,latency=0", settings)
    used = log.subset(log.has_outcome)
    spec = parse_candidate("vw:--cb_explore_adf --epsilon 0.05 -q sa --power_t 0")
    policy = build_policy(spec, settings, seed=0)
    learned = train(policy, PolicyInputs(used, settings), log_rewards(used, objective))
    assert learned == used.n
    arms = tuple(settings.catalog.get(m) for m in MODELS)
    target = np.array([policy.distribution(extract(p), arms) for p in world.prompts])
    logging = np.array([LOGGING[task_of(extract(p))] for p in world.prompts])
    assert world.true_value(target) > world.true_value(logging) + 0.1
