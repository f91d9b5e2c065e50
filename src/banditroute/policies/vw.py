"""Vowpal Wabbit contextual bandit (``--cb_explore_adf``) over prompt and model features.

Each decision is one multi-line example: a shared line with the prompt's features and one
line per eligible model with the model's features (id, provider, price tier, log price), so
the learner generalises across models and copes with an eligible set that changes per
request. Namespaces: ``s`` prompt shape and markers, ``w`` hashed words, ``a`` the model;
the default arguments cross ``s`` and ``w`` with ``a``. VW's cost is minus the reward.
A workspace is not thread-safe: the router serialises calls to it.

Examples go to VW through ``vowpal_wabbit_next._core`` (the package's native module; the
version is pinned in pyproject.toml): the public ``Workspace.predict_one``/``learn_one`` wrap
every parsed line in an ``Example`` and re-check each line's label type on every call (about
a sixth of a prediction's cost), a check that cannot fail for lines this workspace's own
parser produced. ``tests/policies/test_vw_core.py`` checks the predictions are identical.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import cast

import numpy as np
import vowpal_wabbit_next as vw
from vowpal_wabbit_next import _core

from banditroute.catalog import ModelSpec
from banditroute.features import PromptFeatures
from banditroute.policies.base import Policy, Probabilities

DEFAULT_ARGS: tuple[str, ...] = (
    "--cb_explore_adf", "--squarecb", "--gamma_scale", "10",
    "-q", "sa", "-q", "wa", "--power_t", "0",
)  # fmt: skip


def _token(text: str) -> str:
    """A VW-safe feature name: no spaces, colons or pipes."""
    return text.replace(" ", "_").replace(":", "_").replace("|", "_")


def shared_line(context: PromptFeatures) -> str:
    """The shared (context) line of a VW multi-line example."""
    shape = (
        f"tok:{context.log_tokens:.4f} conv:{math.log2(1 + context.conversation_tokens):.4f} "
        f"shots:{min(context.shots, 10)} choices:{min(context.choices, 8)} "
        f"nums:{math.log2(1 + context.numbers):.3f} turns:{math.log2(context.turns):.3f} "
        f"lang_{_token(context.language)}"
    )
    markers = " ".join(context.markers)
    words = " ".join(_token(w) for w in context.words)
    return f"shared |s {shape} {markers} |w {words}"


@functools.lru_cache(maxsize=4096)
def action_line(arm: ModelSpec) -> str:
    """The line describing one model (cached: a model's line never changes)."""
    return (
        f"|a m_{_token(arm.id)} p_{_token(arm.provider)} tier_{arm.price_tier} "
        f"price:{math.log10(1e-3 + arm.blended_usd_per_mtok):.4f}"
    )


REFUSED_FLAGS = frozenset({"--regcb", "--regcbopt"})
"""VW exploration flags refused: measured to return a uniform distribution after any amount of
learning (per-seed quality equal to ``uniform``'s to four decimals on RouterBench)."""


class VWPolicy(Policy):
    """Contextual bandit learned online by Vowpal Wabbit with action-dependent features."""

    name = "vw"

    def __init__(self, args: Sequence[str] = DEFAULT_ARGS, *, seed: int = 0) -> None:
        super().__init__()
        refused = REFUSED_FLAGS.intersection(args)
        if refused:
            raise ValueError(
                f"{', '.join(sorted(refused))}: not supported: with vowpal-wabbit-next 0.7.0 its "
                "probability vector stays uniform however much it learns (it never routes "
                "better than uniform); use --squarecb, --epsilon or --bag"
            )
        self.args = tuple(args)
        self.seed = seed
        self._actions: dict[ModelSpec, _core.Example] = {}
        self._use(self._new_workspace())
        self._greedy = 0

    def _use(self, workspace: vw.Workspace) -> None:  # type: ignore[type-arg]
        """Predict and learn with ``workspace`` from now on (cached action lines dropped)."""
        self._workspace = workspace
        self._core = workspace._workspace  # the native workspace (see the module docstring)
        self._actions = {}

    def _parse(self, line: str) -> _core.Example:
        """One text-format line parsed by the native parser (what TextFormatParser calls)."""
        return _core._parse_line_text(self._core, line)

    def _new_workspace(self, model_data: bytes | None = None) -> vw.Workspace:  # type: ignore[type-arg]
        if model_data is None:
            return vw.Workspace([*self.args, "--quiet", "--random_seed", str(self.seed)])
        # A saved model carries its own random state where a reduction uses one (--bag
        # stores an advanced seed, and VW rejects a disagreeing --random_seed on load).
        return vw.Workspace([*self.args, "--quiet"], model_data=model_data)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "args": self.args, "seed": self.seed}

    def _examples(
        self,
        context: PromptFeatures,
        arms: Sequence[ModelSpec],
        label: tuple[int, float, float] | None = None,
    ) -> list[_core.Example]:
        """The multi-line example; unlabelled action lines are parsed once and reused.

        Reusing parsed, unlabelled action examples, for prediction and for the actions not
        chosen when learning, gives the same predictions as parsing them afresh (checked over
        interleaved predict/learn rounds, ``tests/policies/test_vw_core.py``) at a fraction of
        the cost; the chosen action's labelled line is parsed anew.
        """
        examples = [self._parse(shared_line(context))]
        for index, arm in enumerate(arms):
            if label is not None and label[0] == index:
                line = f"0:{label[1]:.6f}:{label[2]:.6f} {action_line(arm)}"
                examples.append(self._parse(line))
            else:
                cached = self._actions.get(arm)
                if cached is None:
                    cached = self._actions[arm] = self._parse(action_line(arm))
                examples.append(cached)
        return examples

    def _distribution(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> Probabilities:
        prediction = self._predict(context, arms)
        self._greedy = prediction[0][0]  # predict_one lists the greedy action first
        probs = np.zeros(len(arms))
        for index, probability in prediction:
            probs[index] = probability
        return probs

    def best(self, context: PromptFeatures, arms: Sequence[ModelSpec], probs: Probabilities) -> int:
        # Called by distribution() right after _distribution() on the same context: the
        # greedy action of that prediction, without predicting a second time.
        return self._greedy

    def _predict(
        self, context: PromptFeatures, arms: Sequence[ModelSpec]
    ) -> list[tuple[int, float]]:
        """(action index, probability) pairs, greedy action first (VW's ActionProbs)."""
        prediction = self._core.predict_multi_ex_one(self._examples(context, arms))
        return cast(list[tuple[int, float]], prediction)

    def _learn(
        self,
        context: PromptFeatures,
        arms: Sequence[ModelSpec],
        chosen: int,
        probability: float,
        reward: float,
    ) -> None:
        self._core.learn_multi_ex_one(self._examples(context, arms, (chosen, -reward, probability)))

    def save(self) -> bytes:
        return bytes(self._workspace.serialize())

    def workspace_from_bytes(self, data: bytes) -> vw.Workspace:  # type: ignore[type-arg]
        """A workspace with this policy's arguments loaded from serialised model bytes."""
        return self._new_workspace(data)

    def adopt_workspace(self, workspace: vw.Workspace) -> None:  # type: ignore[type-arg]
        """Continue from another workspace (a merged model), with a fresh cache."""
        self._use(workspace)

    def restore(self, data: bytes) -> None:
        try:
            workspace = self._new_workspace(data)
        except Exception as exc:  # VW raises its own error types for corrupt models.
            raise ValueError(f"not a valid VW model snapshot: {exc}") from exc
        self._use(workspace)
