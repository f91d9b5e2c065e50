"""Export decisions joined with their outcomes in Vowpal Wabbit's dsjson format.

One JSON object per line, as Azure Personalizer / the Decision Service log contextual-bandit
events, so ``vw --dsjson --cb_explore_adf -d FILE`` and VW's own tooling read the log::

    {"_label_cost": -0.62, "_label_probability": 0.25, "_label_Action": 3, "_labelIndex": 2,
     "Timestamp": "2025-01-31T12:00:00.000000Z", "Version": "1", "EventId": "<decision id>",
     "a": [3, 1, 2, 4], "c": {"s": {...}, "w": {...}, "_multi": [{"a": {...}}, ...]},
     "p": [0.25, 0.4, 0.2, 0.15], "VWState": {"m": "<policy version>"}}

* ``_multi`` holds one object per eligible model, in the logged eligible order; actions are
  numbered from 1 in that order. ``_label_Action`` is the chosen model's number,
  ``_labelIndex`` its 0-based index, ``_label_probability`` the probability it was chosen
  with and ``_label_cost`` minus its reward under the export objective (VW minimises cost).
* ``a`` lists the action numbers with the chosen one first, then the others by decreasing
  probability (the order of the decision's ranking); ``p`` their probabilities in that order.
* Features mirror the text lines of :class:`~banditroute.policies.vw.VWPolicy`: namespace
  ``s`` (prompt shape, language, task markers) and ``w`` (words) in the shared context, and
  namespace ``a`` (model id, provider, price tier, log price) per action, so the default
  ``-q sa -q wa`` interactions apply unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from banditroute.catalog import Catalog
from banditroute.evaluation.logdata import ReplayLog
from banditroute.features import PromptFeatures


def _token(text: str) -> str:
    return text.replace(" ", "_").replace(":", "_").replace("|", "_")


def shared_features(context: PromptFeatures) -> dict[str, Any]:
    """The shared context: namespaces ``s`` and ``w`` (as ``vw.shared_line``)."""
    shape: dict[str, Any] = {
        "tok": round(context.log_tokens, 4),
        "conv": round(math.log2(1 + context.conversation_tokens), 4),
        "shots": min(context.shots, 10),
        "choices": min(context.choices, 8),
        "nums": round(math.log2(1 + context.numbers), 3),
        "turns": round(math.log2(max(context.turns, 1)), 3),
        f"lang_{_token(context.language)}": 1,
    }
    for marker in context.markers:
        shape[marker] = 1
    return {"s": shape, "w": {_token(w): 1 for w in context.words}}


def action_features(model: str, catalog: Catalog) -> dict[str, Any]:
    """One action's features: namespace ``a`` (as ``vw.action_line``)."""
    if model not in catalog:
        return {"a": {f"m_{_token(model)}": 1}}
    arm = catalog.get(model)
    return {
        "a": {
            f"m_{_token(arm.id)}": 1,
            f"p_{_token(arm.provider)}": 1,
            f"tier_{arm.price_tier}": 1,
            "price": round(math.log10(1e-3 + arm.blended_usd_per_mtok), 4),
        }
    }


def _timestamp(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def event(
    log: ReplayLog, row: int, reward: float, catalog: Catalog, *, with_context: bool = True
) -> dict[str, Any]:
    """The dsjson object of decision ``row`` with ``reward`` (see the module docstring)."""
    cols = log.eligible_columns(row)
    probs = log.logging_probs[row, cols]
    chosen = int(np.flatnonzero(cols == log.actions[row])[0])
    others = sorted((i for i in range(cols.shape[0]) if i != chosen), key=lambda i: (-probs[i], i))
    order = [chosen, *others]
    version = log.policy_versions[row].as_py() if log.policy_versions is not None else ""
    context: dict[str, Any] = {}
    if with_context:
        context = shared_features(log.features(row))
    context["_multi"] = [action_features(log.models[c], catalog) for c in cols]
    return {
        "_label_cost": -float(reward),
        "_label_probability": float(log.propensities[row]),
        "_label_Action": chosen + 1,
        "_labelIndex": chosen,
        "Timestamp": _timestamp(float(log.times[row])),
        "Version": "1",
        "EventId": log.decision_id(row),
        "a": [i + 1 for i in order],
        "c": context,
        "p": [float(probs[i]) for i in order],
        "VWState": {"m": version or "N/A"},
    }


def write_dsjson(
    log: ReplayLog,
    rewards: npt.ArrayLike,
    out: TextIO,
    catalog: Catalog,
    *,
    rows: Iterable[int] | None = None,
) -> int:
    """Write one dsjson line per decision in ``rows`` (default: all); returns how many.

    ``log`` must be loaded with ``with_features=True``; ``rewards`` is ``(n,)``.
    """
    values = np.asarray(rewards, dtype=np.float64)
    written = 0
    for row in rows if rows is not None else range(log.n):
        out.write(json.dumps(event(log, row, float(values[row]), catalog), separators=(",", ":")))
        out.write("\n")
        written += 1
    return written


__all__ = ["action_features", "event", "shared_features", "write_dsjson"]
