"""Warm start from an outcome table: model matching, its errors, and what the policy learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from banditroute.config import Settings, settings_from_mapping
from banditroute.errors import ConfigError
from banditroute.features import extract
from banditroute.outcome_tables import OutcomeTable, table_from_rows, write_outcomes
from banditroute.policies.costaware import CostAwarePolicy
from banditroute.warm_start import learn, load_plan, plan

GOOD, BAD = "zero-one-ai/Yi-34B-Chat", "WizardLM/WizardLM-13B-V1.2"


def _table(models: dict[str, float], prompts: int = 40) -> OutcomeTable:
    """Every model scores a constant quality on every prompt, at a small cost."""
    rows = [
        {
            "prompt_id": f"p{i}",
            "task": "t",
            "prompt": f"Answer question number {i}: which option is right, A or B?",
            "model": model,
            "quality": quality,
            "cost_usd": 0.0001,
        }
        for i in range(prompts)
        for model, quality in models.items()
    ]
    return table_from_rows("warm.parquet", rows)


def test_partial_overlap_learns_the_shared_models_and_lists_the_rest(
    default_settings: Settings,
) -> None:
    """A table model the catalogue lacks is ignored, and catalogue models the table lacks are
    listed as unseen (they start from nothing)."""
    warm = plan(_table({GOOD: 1.0, "acme/unknown-model": 0.5}), default_settings.catalog)
    assert set(warm.columns) == {GOOD}
    assert warm.ignored == ("acme/unknown-model",)
    assert GOOD not in warm.unseen
    assert BAD in warm.unseen


def test_a_table_sharing_no_model_is_refused_naming_both_lists(
    default_settings: Settings,
) -> None:
    """No model in common: a ConfigError naming --warm-start, the table's models and the
    catalogue's."""
    with pytest.raises(ConfigError, match="--warm-start") as caught:
        plan(_table({"acme/one": 1.0, "acme/two": 0.0}), default_settings.catalog)
    message = str(caught.value)
    assert "acme/one" in message
    assert GOOD in message


def test_a_mapping_matches_differently_named_models(default_settings: Settings) -> None:
    """policy.warm_start_models maps a table id onto a catalogue id."""
    warm = plan(_table({"acme/one": 1.0}), default_settings.catalog, {"acme/one": GOOD})
    assert dict(warm.columns) == {GOOD: 0}


@pytest.mark.parametrize(
    ("mapping", "named"),
    [
        ({"acme/absent": GOOD}, "acme/absent"),
        ({"acme/one": "acme/not-in-catalogue"}, "acme/not-in-catalogue"),
    ],
    ids=["table-id-absent", "catalogue-id-absent"],
)
def test_a_bad_mapping_is_named(
    default_settings: Settings, mapping: dict[str, str], named: str
) -> None:
    """A mapping whose table id is not in the table, or whose catalogue id is not in the
    catalogue, is a ConfigError naming the key and the offending id."""
    with pytest.raises(ConfigError, match="warm_start_models") as caught:
        plan(_table({"acme/one": 1.0}), default_settings.catalog, mapping)
    assert named in str(caught.value)


def test_two_table_models_on_one_catalogue_model_is_refused(default_settings: Settings) -> None:
    """Two table columns feeding one catalogue model would double its evidence: refused."""
    with pytest.raises(ConfigError, match="both match"):
        plan(_table({GOOD: 1.0, "acme/one": 0.0}), default_settings.catalog, {"acme/one": GOOD})


def test_learning_from_the_table_prefers_its_better_model(default_settings: Settings) -> None:
    """After a warm start where one model always succeeds and another always fails, a fresh
    prompt goes to the better one, and every (prompt, matched model) pair is one update."""
    table = _table({GOOD: 1.0, BAD: 0.0})
    policy = CostAwarePolicy(seed=0)
    updates = learn(policy, default_settings, plan(table, default_settings.catalog))
    assert updates == 2 * table.n_prompts
    arms = [default_settings.catalog.get(GOOD), default_settings.catalog.get(BAD)]
    probs = policy.distribution(extract("Which option is right here, A or B?"), arms)
    assert probs[0] > 0.95


def test_load_plan_reads_parquet_and_names_a_missing_file(
    tmp_path: Path, default_settings: Settings
) -> None:
    """load_plan reads the long Parquet format; a missing file is an error naming the flag."""
    path = tmp_path / "warm.parquet"
    write_outcomes(_table({GOOD: 1.0}), path)
    assert set(load_plan(path, default_settings.catalog).columns) == {GOOD}
    with pytest.raises(ConfigError, match="--warm-start"):
        load_plan(tmp_path / "absent.parquet", default_settings.catalog)


def test_config_keys_are_read_and_checked(tmp_path: Path) -> None:
    """policy.warm_start is a path and policy.warm_start_models a table of strings."""
    settings = settings_from_mapping(
        {"policy": {"warm_start": str(tmp_path / "w.parquet"), "warm_start_models": {"a": GOOD}}}
    )
    assert settings.policy.warm_start == tmp_path / "w.parquet"
    assert settings.policy.warm_start_models == (("a", GOOD),)
    with pytest.raises(ConfigError, match="warm_start_models"):
        settings_from_mapping({"policy": {"warm_start_models": {"a": 3}}})
    with pytest.raises(ConfigError, match="warm_start_models"):
        settings_from_mapping({"policy": {"warm_start_models": ["a"]}})


def test_the_default_objective_prices_the_warm_rewards(default_settings: Settings) -> None:
    """With equal quality, the dearer model's warm-start value is lower under the default
    (cost-weighted) objective."""
    rows = [
        {"prompt_id": f"p{i}", "task": "t", "prompt": f"Question {i}?", "model": m,
         "quality": 1.0, "cost_usd": c}
        for i in range(30)
        for m, c in ((GOOD, 0.0001), (BAD, 0.01))
    ]  # fmt: skip
    table = table_from_rows("priced", rows)
    policy = CostAwarePolicy(seed=0)
    learn(policy, default_settings, plan(table, default_settings.catalog))
    arms = [default_settings.catalog.get(GOOD), default_settings.catalog.get(BAD)]
    mean, _ = policy.value_estimates(extract("Question 99?"), arms)
    assert mean[0] > mean[1] + 0.2
    assert np.all(np.isfinite(mean))


def test_catalogue_models_the_table_lacks_are_explored_afresh(default_settings: Settings) -> None:
    """After a long warm start on two models, a catalogue model the table lacks gets a real
    share of its first request (it starts at the best learned level, fully explored), not
    the decayed exploration of the models the table taught."""
    table = _table({GOOD: 0.9, BAD: 0.5}, prompts=300)
    policy = CostAwarePolicy(seed=0)
    learn(policy, default_settings, plan(table, default_settings.catalog))
    unseen = default_settings.catalog.get("mistralai/mixtral-8x7b-chat")
    arms = [default_settings.catalog.get(GOOD), default_settings.catalog.get(BAD), unseen]
    probs = policy.distribution(extract("Which option is right here, A or B?"), arms)
    assert probs[2] > 0.45  # 0.49; 0.36 when the warm start made it an arm of every update
