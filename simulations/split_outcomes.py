"""Split an outcome table into two disjoint halves (seeded), for warm-start runs.

    python simulations/split_outcomes.py ../shared/data/outcomes/routerbench_train.parquet \
        --fraction 0.5 --seed 0 --out /tmp/split

writes ``/tmp/split/routerbench_train.part1.parquet`` (a seeded random ``fraction`` of the
prompts) and ``.part2.parquet`` (the rest), in the same long format. Then, for example::

    banditroute simulate --outcomes /tmp/split/routerbench_train.part2.parquet \
        --warm-start /tmp/split/routerbench_train.part1.parquet --budget-usd 0.001255102
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from banditroute.simulation.tables import load_outcomes, write_outcomes


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, split, write both parts; print their paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outcomes", type=Path, help="outcome table (Parquet)")
    parser.add_argument("--fraction", type=float, default=0.5, help="share in part 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    if not 0.0 < args.fraction < 1.0:
        parser.error("--fraction: must be in (0, 1)")
    table = load_outcomes(args.outcomes)
    first, second = table.split(args.fraction, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.outcomes.name.removesuffix(".parquet")
    for part, name in ((first, "part1"), (second, "part2")):
        path = args.out / f"{stem}.{name}.parquet"
        write_outcomes(part, path)
        print(f"{path}: {part.n_prompts} prompts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
