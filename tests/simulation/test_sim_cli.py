"""``banditroute simulate``: arguments, errors naming the argument, the table, JSON and plot."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from banditroute.cli_simulate import add_simulate_parser
from banditroute.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="banditroute")
    add_simulate_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _main(argv: list[str]) -> int:
    """Parse and run the subcommand as the main CLI does (which prints domain errors)."""
    args = _parser().parse_args(argv)
    code: int = args.handler(args)
    return code


def test_simulate_prints_a_table_and_writes_json_and_plot(
    synthetic_file: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run prints the comparison table and writes the JSON summary and a PNG."""
    outcomes = synthetic_file(n_prompts=60)
    out_json, out_png = tmp_path / "run.json", tmp_path / "run.png"
    argv = ["simulate", "--outcomes", str(outcomes), "--policy", "costaware", "--seeds", "2"]
    argv += ["--budget-usd", "0.0005", "--workers", "1", "--no-progress"]
    assert _main([*argv, "--json", str(out_json), "--plot", str(out_png)]) == 0
    printed = capsys.readouterr().out
    assert "per-prompt oracle" in printed
    assert "best fixed" in printed
    assert "prices fitted" in printed
    summary = json.loads(out_json.read_text())
    assert summary["policy"] == "costaware"
    assert summary["budget_usd"] == 0.0005
    assert summary["seeds"] == 2
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "argument"),
    [
        (["--budget-usd", "-1"], "--budget-usd"),
        (["--budget-usd", "lots"], "--budget-usd"),
        (["--seeds", "0"], "--seeds"),
        (["--workers", "two"], "--workers"),
        (["--pacing-rate", "-0.1"], "--pacing-rate"),
        (["--warm-start-mode", "sometimes"], "--warm-start-mode"),
        (["--first-seed", "-1"], "--first-seed"),
    ],
)
def test_malformed_values_exit_2_naming_the_argument(
    argv: list[str], argument: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse rejects malformed values with exit code 2 and a message naming the argument."""
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(["simulate", "--outcomes", "x.parquet", *argv])
    assert exited.value.code == 2
    assert argument in capsys.readouterr().err


def test_missing_outcomes_argument_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """--outcomes is required."""
    with pytest.raises(SystemExit):
        _parser().parse_args(["simulate"])
    assert "--outcomes" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "argument"),
    [
        (["--policy", "clairvoyant"], "--policy"),
        (["--policy", "fixed:nobody/unknown"], "--policy"),
        (["--policy", "vw:--no_such_vw_option"], "--policy"),
        (["--objective", "frugal"], "--objective"),
        (["--objective", "quality=1,speed=2"], "--objective"),
        (["--warm-start", "/nonexistent/warm.parquet"], "--warm-start"),
        (["--json", "/nonexistent/dir/out.json"], "--json"),
        (["--json", "/"], "--json"),
        (["--plot", "/"], "--plot"),
    ],
)
def test_unusable_values_raise_config_error_naming_the_argument(
    extra: list[str], argument: str, synthetic_file: Callable[..., Path]
) -> None:
    """Well-formed but unusable values raise ConfigError whose field and message name the
    argument (the main CLI prints it and exits 2)."""
    outcomes = synthetic_file(n_prompts=9)
    argv = ["simulate", "--outcomes", str(outcomes), "--workers", "1", "--no-progress", *extra]
    with pytest.raises(ConfigError) as error:
        _main(argv)
    assert error.value.field == argument
    assert argument in error.value.message


def test_missing_outcomes_file_names_the_argument(tmp_path: Path) -> None:
    """A path that does not exist is a ConfigError naming --outcomes."""
    with pytest.raises(ConfigError) as error:
        _main(["simulate", "--outcomes", str(tmp_path / "nope.parquet"), "--no-progress"])
    assert error.value.field == "--outcomes"


def test_plot_of_a_stream_shorter_than_the_window_is_written(
    synthetic_file: Callable[..., Path], tmp_path: Path
) -> None:
    """A table of fewer prompts than the plot's 20-prompt window still plots (it crashed on
    the minimum of an empty array)."""
    outcomes = synthetic_file(n_prompts=12)
    out_png = tmp_path / "run.png"
    argv = ["simulate", "--outcomes", str(outcomes), "--seeds", "1", "--workers", "1"]
    assert _main([*argv, "--no-progress", "--plot", str(out_png)]) == 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
