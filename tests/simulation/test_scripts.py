"""The measurement scripts in simulations/ run end to end on small tables the tests make."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from banditroute.outcome_tables import table_from_rows, write_outcomes

SIMULATIONS = Path(__file__).resolve().parents[2] / "simulations"
MODELS = {  # quality on even / odd prompts, cost per call
    "gpt-4-1106-preview": ((0.9, 0.9), 0.005),
    "zero-one-ai/Yi-34B-Chat": ((0.9, 0.3), 0.0003),
    "mistralai/mistral-7b-chat": ((0.5, 0.5), 0.0001),
}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A folder with a small RouterBench-named outcome table of catalogue models."""
    rows = [
        {"prompt_id": f"p{i}", "task": "t", "prompt": f"Question {i}: is it A or B?",
         "model": model, "quality": quality[i % 2], "cost_usd": cost}
        for i in range(160)
        for model, (quality, cost) in MODELS.items()
    ]  # fmt: skip
    folder = tmp_path / "data"
    folder.mkdir()
    write_outcomes(table_from_rows("routerbench_train", rows), folder / "routerbench_train.parquet")
    return folder


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the scripts importable."""
    monkeypatch.syspath_prepend(str(SIMULATIONS))


@pytest.mark.usefixtures("script")
def test_routing_skill_writes_every_comparator_and_replots(data: Path, tmp_path: Path) -> None:
    """routing_skill.py writes, per budget, each run with the random-mix line at its cost, the
    best affordable single model and the oracle; --replot redraws the PNG from the JSON."""
    import routing_skill

    out = tmp_path / "skill.json"
    code = routing_skill.main(
        ["--data", str(data), "--seeds", "1", "--fractions", "0.25", "--cold", "costaware",
         "--warm", "costaware", "--json", str(out), "--plots", str(tmp_path / "plots")]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())["routerbench_train"]
    budget = result["budgets"]["0.25"]
    assert set(budget["runs"]) == {"cold/costaware", "warm/costaware"}
    assert budget["best_single"]["model"] == "zero-one-ai/Yi-34B-Chat"
    assert budget["oracle"]["quality"] >= budget["best_single"]["quality"]
    for run in budget["runs"].values():
        assert 0.0 <= run["random_mix_at_cost"] <= 1.0
        held = run["prompts_to_hold_90pct_seed_mean"]
        assert held is None or 100 <= held <= 160
    assert (tmp_path / "plots" / "routerbench_train.png").stat().st_size > 0
    replotted = tmp_path / "again"
    assert routing_skill.main(["--replot", str(out), "--plots", str(replotted)]) == 0
    assert (replotted / "routerbench_train.png").stat().st_size > 0


@pytest.mark.usefixtures("script")
def test_paired_comparators_use_only_the_judged_prompts() -> None:
    """The paired best single model, random mix and oracle are computed on the prompts a seed
    is judged on, not the whole table: on judged prompts 2 and 3 the cheap model B is right
    every time (whole table: half the time, like A), so B is the best single at quality 1, the
    mix at the router's cost 1.5 is half A half B (0.5), the oracle reaches 1.0, and the fixed
    model A (chosen elsewhere) scores its quality on these prompts, 0."""
    import numpy as np
    import routing_skill

    quality = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [0, 0, 1]], dtype=float)
    cost = np.tile([10.0, 1.0, 2.0], (4, 1))
    result = routing_skill.paired_comparators(
        quality,
        cost,
        np.array([2, 3]),
        np.array([1.0, 0.0]),
        np.array([2.0, 1.0]),
        affordable=[1, 2],
        budget=2.0,
        ref=0,
        fixed=1,
    )
    assert result["prompts"] == 2
    assert result["reference_quality"] == 0.5
    assert result["best_single"] == {"model": 2, "quality": 1.0, "cost_usd": 2.0}
    assert result["fixed_single"] == {"model": 1, "quality": 0.0}
    assert result["random_mix_at_cost"] == pytest.approx(0.5)
    assert result["oracle"] == {"quality": 1.0, "cost_usd": 2.0}
    summary = routing_skill.paired_summary([result, result], ["ref", "A", "B"])
    assert summary["best_single_models"] == {"B": 2}
    assert summary["router_minus_best_single"]["mean"] == pytest.approx(-1.0)  # (0.5 - 1) / 0.5
    assert summary["router_minus_mix"]["mean"] == pytest.approx(0.0)
    assert summary["router_minus_fixed_single"]["mean"] == pytest.approx(1.0)
    assert summary["router_minus_mix"]["above"] == 0


@pytest.mark.usefixtures("script")
def test_routing_skill_pairs_each_seed_with_its_judged_half(data: Path, tmp_path: Path) -> None:
    """Cold, each seed is judged on its own second half of the stream, and its paired
    comparators come from that half: the paired router figures average to the run's judged
    quality and cost, and Yi-34B (right on even prompts only) scores the share of even prompts
    in each seed's half, which differs from seed to seed, not its whole-stream mean."""
    import routing_skill

    out = tmp_path / "skill.json"
    code = routing_skill.main(
        ["--data", str(data), "--seeds", "3", "--fractions", "0.25", "--cold", "costaware",
         "--warm", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())["routerbench_train"]
    run = result["budgets"]["0.25"]["runs"]
    paired = run["cold/costaware"]["paired"]
    seeds = paired["per_seed"]
    streamed = result["stream_prompts"]
    judged = streamed - streamed // 2
    assert paired["judged_prompts"] == judged
    assert sum(s["router_quality"] for s in seeds) / 3 == pytest.approx(
        run["cold/costaware"]["quality"]
    )
    assert sum(s["router_cost_usd"] for s in seeds) / 3 == pytest.approx(
        run["cold/costaware"]["cost_usd"]
    )
    yi = [s["best_single"]["quality"] for s in seeds]
    assert all(s["best_single"]["model"] == "zero-one-ai/Yi-34B-Chat" for s in seeds)
    for q in yi:
        evens = (q - 0.3) / 0.6 * judged
        assert evens == pytest.approx(round(evens))
    assert len({round(q, 9) for q in yi}) > 1
    assert paired["router_minus_best_single"]["seeds"] == 3
    # The table's quality column is that paired figure (relative to the reference on the same
    # judged prompts, ± its standard error), the same number its paired columns compare.
    table = routing_skill.markdown(json.loads(out.read_text()))
    row = next(line for line in table.splitlines() if line.startswith("| cold/costaware |"))
    assert row.split(" | ")[1] == f"{paired['router']['mean']:.3f} ± {paired['router']['se']:.3f}"


@pytest.mark.usefixtures("script")
def test_model_changes_measures_each_routerbench_scenario(data: Path, tmp_path: Path) -> None:
    """model_changes.py runs the add, degrade and price scenarios of the tables it finds, with
    and without drift detection, and skips the tables that are missing."""
    import model_changes

    out = tmp_path / "changes.json"
    code = model_changes.main(
        ["--data", str(data), "--seeds", "1", "--step", "20", "--json", str(out)]
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert [r["scenario"]["kind"] for r in results] == ["add", "degrade", "price"]
    for result in results:
        for policy in ("costaware", "costaware:drift_delta=0"):
            assert len(result[policy]["steps_to_adapt"]) == 1


@pytest.mark.usefixtures("script")
def test_exploration_floor_prices_each_floor_against_floor_zero(data: Path, tmp_path: Path) -> None:
    """exploration_floor.py logs every floor's stream with that floor (the least logged
    probability is at least the floor), replays the fixed models and uniform on it with DR, and
    reports each floor's change in quality and cost against floor 0 on the same seeds."""
    import exploration_floor

    out = tmp_path / "floor.json"
    code = exploration_floor.main(
        ["--data", str(data), "--tables", "routerbench_train", "--floors", "0", "0.1",
         "--seeds", "1", "--n-boot", "20", "--workers", "1", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    summary = {s["floor"]: s for s in json.loads(out.read_text())["summary"]}
    assert set(summary) == {0.0, 0.1}
    assert summary[0.0]["quality_change"] == 0.0
    assert summary[0.1]["min_probability_logged"] >= 0.1 - 1e-9
    assert summary[0.1]["candidates"] == 4  # three fixed models and uniform
    for row in summary.values():
        assert 0.0 <= row["dr_coverage"] <= 1.0
        assert row["dr_width"] > 0.0


@pytest.mark.usefixtures("script")
def test_feature_ceiling_gains_from_the_true_task_only_where_features_miss_it(
    tmp_path: Path,
) -> None:
    """feature_ceiling.py routes the held-out part with predictors fitted on the tuning part:
    when the task (not the prompt's text) decides which cheap model is right, the predictor
    given the true task routes better than the one on the router's features alone, and none
    beats the per-prompt oracle."""
    import feature_ceiling

    rows = [
        {"prompt_id": f"p{i}", "task": "even" if i % 2 == 0 else "odd",
         "prompt": f"Question {i}: is it A or B?", "model": model, "quality": quality[i % 2],
         "cost_usd": cost}
        for i in range(200)
        for model, (quality, cost) in MODELS.items()
    ]  # fmt: skip
    folder = tmp_path / "data"
    folder.mkdir()
    write_outcomes(table_from_rows("routerbench_train", rows), folder / "routerbench_train.parquet")
    out = tmp_path / "ceiling.json"
    assert (
        feature_ceiling.main(["--data", str(folder), "--fractions", "0.1", "--json", str(out)]) == 0
    )
    runs = json.loads(out.read_text())["routerbench_train"]["runs"]
    dense = runs["router's dense features"]["0.10"]
    task = runs["dense + TRUE task label"]["0.10"]
    oracle = runs["oracle (true outcomes)"]["0.10"]
    assert task["quality"] > dense["quality"] + 0.05
    assert oracle["quality"] >= task["quality"] - 1e-9
    for run in runs.values():
        assert run["0.10"]["cost"] <= 0.1 + 1e-6


@pytest.mark.usefixtures("script")
def test_cold_ceiling_learns_from_the_first_half_what_a_single_model_cannot(
    tmp_path: Path,
) -> None:
    """cold_ceiling.py fits full-information predictors on the first n prompts of each seed's
    held-out stream (n capped at the first half) and routes the second half within the budget:
    when the prompt's length says which cheap model is right, the predictor fitted on the first
    half nears the oracle while the single model picked on the first half gets half right."""
    import cold_ceiling

    cheap = {
        "zero-one-ai/Yi-34B-Chat": (1.0, 0.0, 0.0003),
        "mistralai/mistral-7b-chat": (0.0, 1.0, 0.0001),
    }
    rows = []
    for i in range(200):
        long = i % 2 == 0
        prompt = f"Question {i}: " + ("explain this in detail, " * 40 if long else "yes?")
        rows.append({"prompt_id": f"p{i}", "task": "t", "prompt": prompt,
                     "model": "gpt-4-1106-preview", "quality": 1.0, "cost_usd": 0.005})  # fmt: skip
        for model, (on_long, on_short, price) in cheap.items():
            rows.append({"prompt_id": f"p{i}", "task": "t", "prompt": prompt, "model": model,
                         "quality": on_long if long else on_short, "cost_usd": price})  # fmt: skip
    folder = tmp_path / "data"
    folder.mkdir()
    write_outcomes(table_from_rows("routerbench_train", rows), folder / "routerbench_train.parquet")
    out = tmp_path / "cold.json"
    code = cold_ceiling.main(
        ["--data", str(folder), "--seeds", "2", "--sizes", "10", "5000", "--fractions", "0.1",
         "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())["routerbench_train"]
    half = result["held_out_prompts"] // 2
    cells = result["budgets"]["0.10"]
    assert f"full-information logistic, C=1.0, n={half} (first half)" in cells
    assert "full-information logistic, C=1.0, n=10" in cells
    assert not any("n=5000" in name for name in cells)
    learned = cells[f"full-information logistic, C=1.0, n={half} (first half)"]["quality"]
    picked = cells[f"best single picked on n={half} (first half)"]["quality"]
    oracle = cells["oracle (true outcomes)"]["quality"]
    assert picked < 0.7
    assert learned > picked + 0.25
    for name, cell in cells.items():
        assert cell["cost"] <= 0.1 + 1e-6, name
        assert cell["quality"] <= oracle + 1e-9, name
        assert len(cell["quality_per_seed"]) == 2


def test_routing_skill_budget_table_marks_seeds_outside_the_window(tmp_path: Path) -> None:
    """--budget-table prints each seed's whole-stream cost over budget beside the same runs of
    an earlier file, bold where it is outside [0.95, 1.02], and counts those seeds."""
    import routing_skill

    def results(ratios: list[float], quality: float) -> dict[str, object]:
        run = {"quality": quality, "quality_std": 0.0, "cost_over_budget_per_seed": ratios}
        return {
            "t": {
                "table": "t",
                "reference_quality": 1.0,
                "budgets": {"0.10": {"runs": {"cold/costaware": run}}},
            }
        }

    after, before = tmp_path / "after.json", tmp_path / "before.json"
    after.write_text(json.dumps(results([0.99, 1.03], 0.9)), encoding="utf-8")
    before.write_text(json.dumps(results([0.8, 1.0], 0.85)), encoding="utf-8")
    text = routing_skill.budget_markdown(
        json.loads(after.read_text("utf-8")), json.loads(before.read_text("utf-8"))
    )
    assert "| t | 10% | cold/costaware | 0.850 -> 0.900 ± 0.000 | **0.800**, 1.000 | " in text
    assert "0.990, **1.030** | 0.990-1.030 |" in text
    assert "Seeds outside [0.95, 1.02] of the budget: 1 of 2." in text
    assert routing_skill.main(["--budget-table", str(after), str(before)]) == 0


def _skill_results(routing_skill: Any, data: Path, out: Path, *args: str) -> dict[str, Any]:
    """Run routing_skill.py with one seed and these arguments; its JSON results."""
    assert routing_skill.main(["--data", str(data), "--seeds", "1", *args, "--json", str(out)]) == 0
    return json.loads(out.read_text("utf-8"))  # type: ignore[no-any-return]


@pytest.mark.usefixtures("script")
def test_routing_skill_replot_merges_runs_of_the_same_table_and_budget(
    data: Path, tmp_path: Path
) -> None:
    """--replot A B merges the runs of the same table and budget from both files (the default
    policy run later, beside the others): every run is kept once, budgets come in increasing
    order whatever the files' order, each budget's cold runs before its warm ones; --json
    writes the merged results, the Markdown has one table per budget listing every run and the
    comparators, and --plots draws one PNG per table."""
    import routing_skill

    default = _skill_results(
        routing_skill,
        data,
        tmp_path / "default.json",
        "--fractions",
        "0.25",
        "--cold",
        "costaware",
        "--warm",
        "costaware",
    )
    others = _skill_results(routing_skill, data, tmp_path / "others.json",
                            "--fractions", "0.25", "0.10", "--cold", "uniform", "vw",
                            "--warm", "vw")  # fmt: skip
    merged_path, md = tmp_path / "merged.json", tmp_path / "merged.md"
    code = routing_skill.main(
        ["--replot", str(tmp_path / "default.json"), str(tmp_path / "others.json"),
         "--json", str(merged_path), "--markdown", str(md), "--plots", str(tmp_path / "plots")]
    )  # fmt: skip
    assert code == 0
    merged = json.loads(merged_path.read_text("utf-8"))["routerbench_train"]
    assert list(merged["budgets"]) == ["0.10", "0.25"]
    runs = merged["budgets"]["0.25"]["runs"]
    assert list(runs) == ["cold/costaware", "cold/uniform", "cold/vw", "warm/costaware", "warm/vw"]
    assert (
        runs["warm/costaware"]
        == default["routerbench_train"]["budgets"]["0.25"]["runs"]["warm/costaware"]
    )
    assert runs["cold/vw"] == others["routerbench_train"]["budgets"]["0.25"]["runs"]["cold/vw"]
    assert list(merged["budgets"]["0.10"]["runs"]) == ["cold/uniform", "cold/vw", "warm/vw"]
    text = md.read_text("utf-8")
    at_10, at_25 = text.index("budget 10% of"), text.index("budget 25% of")
    assert at_10 < at_25
    section = text[at_25 : text.index("Paired,")]
    for name in runs:
        assert section.count(f"| {name} |") == 1, name
    for row in ("| best single affordable (whole stream): Yi-34B-Chat |",
                "| random mix at the budget (whole stream) |",
                "| per-prompt oracle within the budget (whole stream) |"):  # fmt: skip
        assert section.count(row) == 1, row
    assert (tmp_path / "plots" / "routerbench_train.png").stat().st_size > 0


def _bare_results(stream: str, runs: list[str]) -> dict[str, Any]:
    """A results file's shape with nothing but what merging reads."""
    budget = {"fraction": 0.25, "budget_usd": 1.0, "runs": {name: {} for name in runs}}
    return {
        "t": {"table": "t", "stream": stream, "stream_prompts": 10, "reference": "m",
              "reference_cost_usd": 4.0, "budgets": {"0.25": budget}}
    }  # fmt: skip


@pytest.mark.usefixtures("script")
@pytest.mark.parametrize(
    ("second", "named"),
    [
        (_bare_results("t[holdout]", ["cold/vw"]), "'cold/vw' at budget 0.25 is in both"),
        (_bare_results("t[tune]", ["cold/linucb"]), "stream is 't[holdout]'"),
    ],
)
def test_routing_skill_replot_refuses_what_it_cannot_merge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], second: dict[str, Any], named: str
) -> None:
    """--replot refuses, naming the argument and both files, a run that is in two files (one
    of them would be dropped silently) and a table streamed differently in two files (another
    part: the runs are not on the same prompts)."""
    import routing_skill

    first_path, second_path = tmp_path / "first.json", tmp_path / "second.json"
    first_path.write_text(json.dumps(_bare_results("t[holdout]", ["cold/vw"])), "utf-8")
    second_path.write_text(json.dumps(second), "utf-8")
    with pytest.raises(SystemExit) as exit_info:
        routing_skill.main(["--replot", str(first_path), str(second_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--replot:" in err
    assert named in err
    assert str(first_path) in err
    assert str(second_path) in err


@pytest.mark.usefixtures("script")
def test_routing_skill_figure_keeps_legend_and_labels_off_the_points(
    data: Path, tmp_path: Path, figures: list[Any]
) -> None:
    """The every-policy figure has a cold and a warm column (cost-quality plane above the
    learning curves); one legend beside the axes, so it hides no point, names each policy once
    (the default marked) in the same colour in both columns; the single models' labels
    neither overlap nor leave their axes (a model outside the view, which is zoomed on the runs,
    is listed in the legend), and each run's points are joined in budget order."""
    import routing_skill
    from plot_checks import outside_axes, overlapping_texts

    result = _skill_results(routing_skill, data, tmp_path / "r.json", "--fractions", "0.25",
                            "0.10", "--cold", "uniform", "vw", "--warm", "vw")  # fmt: skip
    fig = routing_skill.skill_figure(result["routerbench_train"])
    figures.append(fig)
    fig.canvas.draw()
    assert len(fig.axes) == 4
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    box = legend.get_window_extent()
    assert not any(box.overlaps(ax.get_window_extent()) for ax in fig.axes)
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels.count("uniform") == labels.count("vw") == 1
    cold, warm = fig.axes[0], fig.axes[1]
    listed = " ".join(labels)
    for plane in (cold, warm):
        assert overlapping_texts(fig, plane) == []
        assert outside_axes(fig, plane) == []
        drawn = {t.get_text() for t in plane.texts}
        for model in result["routerbench_train"]["models"]:
            short = model.rsplit("/", 1)[-1]
            assert short in drawn or short in listed, short

    ref_c = result["routerbench_train"]["reference_cost_usd"]
    budgets = result["routerbench_train"]["budgets"]
    (handle,) = [h for h, t in zip(legend.legend_handles, labels, strict=True) if t == "vw"]
    for plane, mode in ((cold, "cold"), (warm, "warm")):
        (line,) = [
            line for line in plane.get_lines()
            if line.get_color() == handle.get_color() and len(line.get_xdata()) == 2
        ]  # fmt: skip
        costs = [budgets[key]["runs"][f"{mode}/vw"]["cost_usd"] / ref_c for key in ("0.10", "0.25")]
        assert list(line.get_xdata()) == pytest.approx(costs)


@pytest.mark.usefixtures("script")
def test_routing_skill_smooths_only_long_learning_curves() -> None:
    """A learning curve of a stream up to about 1,000 prompts is drawn as recorded (trailing
    100-prompt windows); a longer one (RouteLLM MMLU's 4,242 prompts, 415 points) is averaged
    over a 25th of its points, so its noise does not hide the policies' differences, ending at
    the same prompt."""
    import numpy as np
    import routing_skill

    short = np.linspace(0.5, 1.0, 52)
    steps, curve = routing_skill._smoothed(short)
    assert list(curve) == list(short)
    assert steps[0] == 100
    long = np.tile([0.0, 1.0], 208)[:415]
    steps, curve = routing_skill._smoothed(long)
    assert len(curve) == 415 - 16 + 1
    assert steps[-1] == 100 + 10 * 414
    assert np.allclose(curve, 0.5)
