"""Building the CLI's parser and printing any subcommand's ``--help`` imports none of the heavy
libraries (numpy, scipy, duckdb, matplotlib, river, Vowpal Wabbit, gRPC, ...): a command loads
them when it runs, so ``banditroute replay --help`` starts at once instead of after seconds of
imports. Each case runs in a fresh interpreter, whose ``sys.modules`` is then inspected."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import banditroute.cli
from banditroute.cli import build_parser
from banditroute.outcome_tables import table_from_rows, write_outcomes

HEAVY = (
    "numpy", "scipy", "duckdb", "matplotlib", "river", "vowpal_wabbit_next", "grpc", "pyarrow",
    "pandas", "sklearn",
)  # fmt: skip
SOURCE = Path(banditroute.cli.__file__).resolve().parents[1]

_PROBE = f"""
import json, sys
from banditroute.cli import build_parser
try:
    build_parser().parse_args(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
else:
    code = None
print(json.dumps({{"code": code, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def _subcommands() -> list[list[str]]:
    """Every subcommand path of the parser (``audit verify`` included), found by walking it."""
    found: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return found


def _probe(argv: list[str]) -> dict[str, object]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SOURCE), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_every_subcommand_is_probed() -> None:
    """The walk finds the offline commands the issue names, so the cases below cover them."""
    names = {" ".join(path) for path in _subcommands()}
    assert {"replay", "tune", "export", "report", "simulate", "audit", "audit verify"} <= names


@pytest.mark.parametrize("argv", [[], *_subcommands()], ids=lambda argv: " ".join(argv) or "-")
def test_help_imports_no_heavy_module(argv: list[str]) -> None:
    """``banditroute [SUBCOMMAND] --help`` (which builds every parser) prints its help and
    exits 0 with none of the heavy modules imported."""
    result = _probe([*argv, "--help"])
    assert result == {"code": 0, "heavy": []}


def test_serving_modules_do_not_import_river_bandit_scikit_learn_or_the_simulator() -> None:
    """The server's modules load without river.bandit (LinUCB's home, which imports river's
    datasets and with them scikit-learn when installed): only a linucb policy needs it, and
    it cost a default server seconds of start-up on a loaded machine. Nor do they load the
    simulator, which only a warm start (reading an outcome table) uses."""
    code = (
        "import sys, banditroute.server.app, banditroute.policies.factory as f\n"
        "from banditroute.config import load_settings\n"
        "f.build_policy(load_settings(None).policy, semantic=True)\n"
        "print(sorted(m for m in ('river.bandit', 'sklearn', 'banditroute.simulation')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "[]"


_WARM_SERVER = """
import json, sys
from banditroute.config import settings_from_mapping
from banditroute.server.app import build_service
service = build_service(settings_from_mapping(json.loads(sys.argv[1])))
loaded = sorted(m for m in ('banditroute.warm_start', 'banditroute.simulation') if m in sys.modules)
service.stop()
print(json.dumps(loaded))
"""


def test_a_server_with_a_warm_start_does_not_import_the_simulator(tmp_path: Path) -> None:
    """Building a server configured with policy.warm_start learns the outcome table (the warm
    start module is loaded) without loading ``banditroute.simulation``: the table reader and
    the catalogue's model matching live outside the simulator."""
    rows = [
        {"prompt_id": f"p{i}", "task": "t", "prompt": f"Question {i}: A or B?",
         "model": "zero-one-ai/Yi-34B-Chat", "quality": 1.0, "cost_usd": 0.0001}
        for i in range(5)
    ]  # fmt: skip
    table = tmp_path / "warm.parquet"
    write_outcomes(table_from_rows("warm", rows), table)
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "log": {"path": str(tmp_path / "log.duckdb")},
        "policy": {"warm_start": str(table), "snapshot_path": str(tmp_path / "policy.snapshot")},
    }
    out = subprocess.run(
        [sys.executable, "-c", _WARM_SERVER, json.dumps(config)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["banditroute.warm_start"]
