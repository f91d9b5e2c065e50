"""One contract every policy passes: honest distributions, greedy mode, snapshots, learning.

Each policy is a :class:`Case` in ``CASES`` saying how to build it and whether it learns. The
learning test runs for every case: learners must come to prefer the rewarded model, and
non-learners must keep their distribution unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from banditroute.catalog import ModelSpec
from banditroute.config import Settings
from banditroute.decision_ids import sample_index
from banditroute.features import PromptFeatures, extract
from banditroute.policies.base import Policy
from banditroute.policies.costaware import CostAwarePolicy
from banditroute.policies.fixed import FixedPolicy
from banditroute.policies.linucb import LinUCBPolicy
from banditroute.policies.uniform import UniformPolicy
from banditroute.policies.vw import DEFAULT_ARGS, VWPolicy

PROMPTS = (
    "What is the capital of France?",
    "def add(a, b):\n    return a - b\nFix the bug.",
    "Solve for x: 3x + 5 = 20.",
    "Translate 'good morning' into German.",
    "Which is larger?\nA) 3\nB) 7\nAnswer:",
    "Write a short poem about autumn leaves.",
)


@dataclass(frozen=True)
class Case:
    """How to build one policy for the contract, whether it learns from rewards, and whether a
    restored snapshot goes on learning exactly like the original (VW's --cover does not save
    its internal example counter, so with a decaying learning rate it drifts apart)."""

    build: Callable[[Sequence[ModelSpec]], Policy]
    learns: bool
    resumes_exactly: bool = True


CASES = [
    pytest.param(Case(lambda arms: UniformPolicy(), learns=False), id="uniform-non-learning"),
    pytest.param(Case(lambda arms: FixedPolicy(arms[0].id), learns=False), id="fixed-non-learning"),
    pytest.param(Case(lambda arms: VWPolicy(DEFAULT_ARGS, seed=7), learns=True), id="vw-default"),
    pytest.param(
        Case(lambda arms: VWPolicy(["--cb_explore_adf", "--epsilon", "0.1"], seed=7), learns=True),
        id="vw-epsilon",
    ),
    pytest.param(
        Case(
            lambda arms: VWPolicy(["--cb_explore_adf", "--cover", "3"], seed=7),
            learns=True,
            resumes_exactly=False,
        ),
        id="vw-cover",
    ),
    pytest.param(
        Case(lambda arms: VWPolicy(["--cb_explore_adf", "--bag", "3"], seed=7), learns=True),
        id="vw-bag",
    ),
    pytest.param(Case(lambda arms: LinUCBPolicy(seed=7), learns=True), id="linucb"),
    pytest.param(Case(lambda arms: CostAwarePolicy(seed=7), learns=True), id="costaware"),
    pytest.param(
        Case(lambda arms: CostAwarePolicy(exploration="squarecb", seed=7), learns=True),
        id="costaware-squarecb",
    ),
]


@pytest.fixture
def arms(default_settings: Settings) -> tuple[ModelSpec, ...]:
    """All 11 catalogue models, in catalogue order."""
    return tuple(default_settings.catalog)


@pytest.fixture
def contexts() -> list[PromptFeatures]:
    """Features of a few different prompts."""
    return [extract(p) for p in PROMPTS]


def _assert_distribution(probs: np.ndarray, size: int) -> None:
    assert isinstance(probs, np.ndarray)
    assert probs.shape == (size,)
    assert np.all(np.isfinite(probs))
    assert np.all(probs >= 0.0)
    assert probs.sum() == pytest.approx(1.0, abs=1e-9)


def _train(
    policy: Policy,
    arms: Sequence[ModelSpec],
    contexts: Sequence[PromptFeatures],
    *,
    rounds: int,
    rewarded: int,
    prefix: str = "round",
) -> None:
    """Rounds where the router's sampler picks a model and only ``rewarded`` earns reward 1."""
    for i in range(rounds):
        context = contexts[i % len(contexts)]
        probs = policy.distribution(context, arms)
        chosen = sample_index(probs, f"{prefix}-{i}", seed=3)
        policy.learn(
            context, arms, chosen, float(probs[chosen]), 1.0 if chosen == rewarded else 0.0
        )


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("size", [1, 2, 5, 11])
def test_distribution_covers_exactly_the_eligible_models(
    case: Case, size: int, arms: tuple[ModelSpec, ...], contexts: list[PromptFeatures]
) -> None:
    """The result is a probability vector aligned with the eligible models: >= 0, sums to 1."""
    eligible = arms[:size]
    policy = case.build(eligible)
    for context in contexts:
        _assert_distribution(policy.distribution(context, eligible), size)


@pytest.mark.parametrize("case", CASES)
def test_eligible_set_may_change_between_calls(
    case: Case, arms: tuple[ModelSpec, ...], contexts: list[PromptFeatures]
) -> None:
    """Distributions stay valid when each call (and each learning step) sees other models."""
    policy = case.build(arms)
    subsets = [arms[:3], arms[4:9], arms[::2], arms[7:], (arms[10], arms[0]), arms]
    for i, subset in enumerate(subsets * 3):
        context = contexts[i % len(contexts)]
        probs = policy.distribution(context, subset)
        _assert_distribution(probs, len(subset))
        chosen = sample_index(probs, f"subset-{i}")
        policy.learn(context, subset, chosen, float(probs[chosen]), 0.3 * (i % 3))


@pytest.mark.parametrize("case", CASES)
def test_distribution_is_a_function_of_the_learned_state(
    case: Case, arms: tuple[ModelSpec, ...], contexts: list[PromptFeatures]
) -> None:
    """Asking twice without learning gives the same vector, fresh or trained: the vector the
    router logs and samples from is the policy's real distribution (no hidden tie-breaking)."""
    policy = case.build(arms)
    for rounds in (0, 20):
        _train(policy, arms, contexts, rounds=rounds, rewarded=2)
        for context in contexts:
            for subset in (arms, arms[:4]):
                first = policy.distribution(context, subset)
                np.testing.assert_array_equal(policy.distribution(context, subset), first)


@pytest.mark.parametrize("case", CASES)
def test_explore_false_is_one_hot(
    case: Case, arms: tuple[ModelSpec, ...], contexts: list[PromptFeatures]
) -> None:
    """Greedy mode puts all probability on one eligible model, before and after learning."""
    policy = case.build(arms)
    for trained in (False, True):
        if trained:
            _train(policy, arms, contexts, rounds=30, rewarded=1)
        for context in contexts:
            greedy = policy.distribution(context, arms[1:6], explore=False)
            _assert_distribution(greedy, 5)
            assert sorted(greedy.tolist()) == [0.0, 0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("case", CASES)
def test_save_restore_round_trip_gives_identical_distributions(
    case: Case, arms: tuple[ModelSpec, ...], contexts: list[PromptFeatures]
) -> None:
    """A fresh policy restored from a snapshot decides exactly like the original; after both
    learn the same rewards they still agree (exactly, unless the case says otherwise)."""
    original = case.build(arms)
    _train(original, arms, contexts, rounds=40, rewarded=3)
    restored = case.build(arms)
    restored.restore(original.save())
    subsets = (arms, arms[2:7], arms[::3])
    for subset in subsets:
        for context in contexts:
            np.testing.assert_array_equal(
                original.distribution(context, subset), restored.distribution(context, subset)
            )
    for policy in (original, restored):
        _train(policy, arms, contexts, rounds=10, rewarded=5, prefix="after")
    for context in contexts:
        expected = original.distribution(context, arms)
        actual = restored.distribution(context, arms)
        if case.resumes_exactly:
            np.testing.assert_array_equal(actual, expected)
        else:
            _assert_distribution(actual, len(arms))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("garbage", [b"garbage bytes, not a snapshot", b"\x00" * 64])
def test_restore_of_garbage_raises_value_error(
    case: Case, garbage: bytes, arms: tuple[ModelSpec, ...]
) -> None:
    """Bytes that are not a snapshot of this policy raise ValueError (never crash or pass)."""
    policy = case.build(arms)
    with pytest.raises(ValueError, match="snapshot"):
        policy.restore(garbage)


@pytest.mark.parametrize("case", CASES)
def test_learn_validates_its_arguments_and_counts_updates(
    case: Case, arms: tuple[ModelSpec, ...], contexts: list[PromptFeatures]
) -> None:
    """learn() rejects a chosen index outside the arms or a probability outside (0, 1], and
    counts accepted updates."""
    policy = case.build(arms)
    with pytest.raises(ValueError, match="chosen"):
        policy.learn(contexts[0], arms[:3], 3, 0.5, 1.0)
    with pytest.raises(ValueError, match="probability"):
        policy.learn(contexts[0], arms[:3], 0, 0.0, 1.0)
    with pytest.raises(ValueError, match="probability"):
        policy.learn(contexts[0], arms[:3], 0, 1.5, 1.0)
    assert policy.updates == 0
    policy.learn(contexts[0], arms[:3], 1, 0.5, 1.0)
    assert policy.updates == 1


@pytest.mark.parametrize("case", CASES)
def test_empty_arms_are_rejected(case: Case, arms: tuple[ModelSpec, ...]) -> None:
    """Asking for a distribution over no model is an error, not an empty vector."""
    with pytest.raises(ValueError, match="arms"):
        case.build(arms).distribution(extract("hello"), [])


@pytest.mark.parametrize("case", CASES)
def test_policies_built_alike_decide_alike(
    case: Case, arms: tuple[ModelSpec, ...], contexts: list[PromptFeatures]
) -> None:
    """Two policies built with the same settings and seed, fed the same rounds, agree."""
    first, second = case.build(arms), case.build(arms)
    for policy in (first, second):
        _train(policy, arms[:4], contexts, rounds=25, rewarded=0)
    for context in contexts:
        np.testing.assert_array_equal(
            first.distribution(context, arms[:4]), second.distribution(context, arms[:4])
        )
    assert first.version == second.version


@pytest.mark.parametrize("case", CASES)
def test_learning_favours_the_rewarded_model(
    case: Case, arms: tuple[ModelSpec, ...], contexts: list[PromptFeatures]
) -> None:
    """After 300 rounds where only model B earns reward, a learner makes B its most probable
    model and likelier than at the start; a non-learner's distribution does not move."""
    eligible = arms[:4]
    rewarded = 1
    policy = case.build(eligible)
    before = [policy.distribution(c, eligible) for c in contexts]
    version_before = policy.version
    _train(policy, eligible, contexts, rounds=300, rewarded=rewarded)
    after = [policy.distribution(c, eligible) for c in contexts]
    if case.learns:
        for start, end in zip(before, after, strict=True):
            assert int(np.argmax(end)) == rewarded
            assert end[rewarded] > start[rewarded]
            assert end[rewarded] > 0.5
        assert policy.version != version_before
    else:
        for start, end in zip(before, after, strict=True):
            np.testing.assert_array_equal(start, end)


@pytest.mark.parametrize("case", CASES)
def test_learning_from_a_uniform_log_favours_the_rewarded_model(
    case: Case, arms: tuple[ModelSpec, ...], contexts: list[PromptFeatures]
) -> None:
    """``learn_logged`` (a warm start from another policy's log) validates and counts like
    ``learn``; after a uniform-random log where only model B earned reward, a learner makes B
    its most probable model, and a non-learner does not move."""
    eligible = arms[:4]
    policy = case.build(eligible)
    with pytest.raises(ValueError, match="probability"):
        policy.learn_logged(contexts[0], eligible, 0, 0.0, 1.0)
    before = [policy.distribution(c, eligible) for c in contexts]
    rng = np.random.default_rng(5)
    for i in range(300):
        chosen = int(rng.integers(len(eligible)))
        reward = 1.0 if chosen == 1 else 0.0
        policy.learn_logged(contexts[i % len(contexts)], eligible, chosen, 0.25, reward)
    assert policy.updates == 300
    after = [policy.distribution(c, eligible) for c in contexts]
    for start, end in zip(before, after, strict=True):
        if case.learns:
            assert int(np.argmax(end)) == 1
            assert end[1] > 0.5
        else:
            np.testing.assert_array_equal(start, end)


def test_costaware_drift_detection_relearns_a_degraded_model_sooner(
    arms: tuple[ModelSpec, ...],
) -> None:
    """When the preferred model's reward collapses, the ADWIN drift detector fires and the
    policy abandons the model in fewer updates than the same policy without detection."""
    pair = arms[:2]
    context = extract("Pick A or B for this question.")

    def switch_step(policy: CostAwarePolicy) -> int:
        for _ in range(300):  # model 0 good, model 1 mediocre
            policy.learn(context, pair, 0, 0.5, 0.9)
            policy.learn(context, pair, 1, 0.5, 0.5)
        for step in range(1, 2000):  # model 0 collapses
            policy.learn(context, pair, 0, 0.5, 0.1)
            policy.learn(context, pair, 1, 0.5, 0.5)
            if policy.distribution(context, pair, explore=False)[1] == 1.0:
                return step
        return 2000

    watched, blind = CostAwarePolicy(seed=1), CostAwarePolicy(seed=1, drift_delta=0.0)
    assert switch_step(watched) < switch_step(blind)
    assert watched.drifts.get(pair[0].id, 0) >= 1
    assert blind.drifts == {}


def test_costaware_explores_a_model_added_late_as_a_new_one(
    arms: tuple[ModelSpec, ...],
) -> None:
    """A model first seen after thousands of updates keeps a fresh exploration scale: it gets
    a real share of probability at once, not the decayed scale of the long-known models."""
    known, late = arms[:2], arms[2]
    context = extract("Pick A or B for this question.")
    policy = CostAwarePolicy(seed=1, drift_delta=0.0)
    for _ in range(3000):
        policy.learn(context, known, 0, 0.5, 0.95)
        policy.learn(context, known, 1, 0.5, 0.6)
    probs = policy.distribution(context, (*known, late))
    # 0.34 with a fresh scale for the new model; 0.14 if its scale had decayed with the clock.
    assert probs[2] > 0.25


def test_costaware_starts_a_new_model_at_the_best_learned_level(
    arms: tuple[ModelSpec, ...],
) -> None:
    """A model joining learned ones starts at the best learned model's value (optimism worth
    about one observation), so it is tried at once; a few poor outcomes bring it down."""
    known, late = arms[:2], arms[2]
    context = extract("Pick A or B for this question.")
    policy = CostAwarePolicy(seed=1, drift_delta=0.0)
    for _ in range(200):
        policy.learn(context, known, 0, 0.5, 0.9)
        policy.learn(context, known, 1, 0.5, 0.5)
    values, _ = policy.value_estimates(context, (*known, late))
    assert values[2] == pytest.approx(values[0], abs=0.05)
    for _ in range(10):
        policy.learn(context, (*known, late), 2, 0.5, 0.2)
    values, _ = policy.value_estimates(context, (*known, late))
    assert values[2] < values[1]
