"""VWPolicy calls vowpal_wabbit_next's native module directly (``_core``, a private API):
its predictions must be exactly those of the public ``Workspace.predict_one``/``learn_one``
with ``TextFormatParser``, through interleaved predictions and learning over changing
eligible sets, and the pinned package version must be the one this was checked against."""

from __future__ import annotations

import importlib.metadata
import random
from collections.abc import Sequence

import pytest
import vowpal_wabbit_next as vw

from banditroute.catalog import ModelSpec
from banditroute.config import Settings
from banditroute.features import PromptFeatures, extract
from banditroute.policies.vw import DEFAULT_ARGS, VWPolicy, action_line, shared_line

PROMPTS = (
    "What is the capital of France?",
    "def add(a, b):\n    return a - b\nFix the bug.",
    "Solve for x: 3x + 5 = 20. Show your steps.",
    "Translate 'good morning' into German.",
    "Which is larger?\nA) 3\nB) 7\nAnswer:",
    "Summarize the following text in two sentences: " + "The committee met. " * 30,
)


class PublicVW:
    """The same learner through vowpal_wabbit_next's public API only."""

    def __init__(self, args: Sequence[str], seed: int) -> None:
        self.workspace = vw.Workspace([*args, "--quiet", "--random_seed", str(seed)])
        self.parser = vw.TextFormatParser(self.workspace)

    def _examples(
        self,
        context: PromptFeatures,
        arms: Sequence[ModelSpec],
        label: tuple[int, float, float] | None = None,
    ) -> list[vw.Example]:
        lines = [shared_line(context)]
        for index, arm in enumerate(arms):
            prefix = f"0:{label[1]:.6f}:{label[2]:.6f} " if label and label[0] == index else ""
            lines.append(prefix + action_line(arm))
        return [self.parser.parse_line(line) for line in lines]

    def predict(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> object:
        return self.workspace.predict_one(self._examples(context, arms))

    def learn(
        self, context: PromptFeatures, arms: Sequence[ModelSpec], chosen: int, p: float, r: float
    ) -> None:
        self.workspace.learn_one(self._examples(context, arms, (chosen, -r, p)))


def test_the_pinned_version_is_the_one_checked() -> None:
    assert importlib.metadata.version("vowpal-wabbit-next") == "0.7.0"


@pytest.mark.parametrize(
    "args",
    [
        DEFAULT_ARGS,
        ("--cb_explore_adf", "--epsilon", "0.1"),
        ("--cb_explore_adf", "--cover", "3"),
        ("--cb_explore_adf", "--bag", "3"),
        ("--cb_explore_adf", "--softmax", "--lambda", "5", "-q", "sa"),
    ],
    ids=["default", "epsilon", "cover", "bag", "softmax"],
)
def test_native_calls_predict_exactly_like_the_public_api(
    default_settings: Settings, args: Sequence[str]
) -> None:
    catalog = tuple(default_settings.catalog)
    policy, public = VWPolicy(args, seed=3), PublicVW(args, seed=3)
    rng = random.Random(5)
    for step in range(300):
        context = extract(PROMPTS[step % len(PROMPTS)] + f" #{step}")
        arms = tuple(m for m in catalog if rng.random() < 0.8) or catalog[:1]
        assert policy._predict(context, arms) == public.predict(context, arms)
        chosen, probability = rng.randrange(len(arms)), rng.uniform(0.05, 1.0)
        reward = rng.uniform(-1.0, 1.0)
        policy.learn(context, arms, chosen, probability, reward)
        public.learn(context, arms, chosen, probability, reward)
    assert policy.save() == bytes(public.workspace.serialize())


@pytest.mark.parametrize("flag", ["--regcb", "--regcbopt"])
def test_regcb_is_refused_with_the_reason(flag: str) -> None:
    """RegCB's distribution stays uniform in this VW build, so the policy refuses it by name."""
    with pytest.raises(ValueError, match="uniform") as caught:
        VWPolicy(("--cb_explore_adf", flag))
    assert flag in str(caught.value)
