"""Split an outcome table into two disjoint halves (seeded), for warm-start runs.

    python simulations/split_outcomes.py ../shared/data/outcomes/routerbench_train.parquet \
        --fraction 0.5 --seed 0 --out /tmp/split

writes ``/tmp/split/routerbench_train.part1.parquet`` (a seeded random ``fraction`` of the
prompts) and ``.part2.parquet`` (the rest), in the same long format. With ``--holdout`` it writes
``.tune.parquet`` and ``.holdout.parquet`` instead: the fixed 30% held out by a hash of each
prompt id (task labels blanked), the split every measurement in benchmarks/ reports on. Then,
for example::

    banditroute simulate --outcomes /tmp/split/routerbench_train.part2.parquet \
        --warm-start /tmp/split/routerbench_train.part1.parquet --budget-usd 0.001255102
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from banditroute.outcome_tables import load_outcomes, write_outcomes


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, split, write both parts; print their paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outcomes", type=Path, help="outcome table (Parquet)")
    parser.add_argument("--fraction", type=float, default=0.5, help="share in part 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--holdout",
        action="store_true",
        help="write the fixed tune/holdout split (30%% held out by a hash of prompt_id)",
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.fraction < 1.0:
        parser.error("--fraction: must be in (0, 1)")
    table = load_outcomes(args.outcomes)
    if args.holdout:
        first, second = table.holdout_split()
        names = ("tune", "holdout")
    else:
        first, second = table.split(args.fraction, args.seed)
        names = ("part1", "part2")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.outcomes.name.removesuffix(".parquet")
    for part, name in zip((first, second), names, strict=True):
        path = args.out / f"{stem}.{name}.parquet"
        write_outcomes(part, path)
        print(f"{path}: {part.n_prompts} prompts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
