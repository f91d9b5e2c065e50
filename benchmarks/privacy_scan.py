"""Time of the privacy scan per prompt: short prompts (Route's usual case), a 2 KB prompt, and
megabytes built to make regular expressions backtrack (they must stay linear).

The tests only check that a hostile megabyte finishes (a generous bound that catches a hang);
how fast it finishes is measured here. Usage::

    python benchmarks/privacy_scan.py [--repeat 2000] [--json /tmp/privacy_scan.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
from pathlib import Path

from route_latency import _PROMPTS

from banditroute.privacy import scan

MAX_REPEAT = 1_000_000
"""Upper bound on --repeat, so a run stays bounded."""

LONG_PROMPT = (
    "Please review this note from jane.roe@example.org and call +44 20 7946 0958. "
    + "The committee met on 2024-01-15 to review 3 budgets; x = 3 + 4. " * 30
)[:2048]
"""A 2 KB prompt with an e-mail address, a phone number, dates and arithmetic."""

HOSTILE: dict[str, str] = {
    "digits": "4" * 1_000_000,
    "at signs": "a@" * 500_000,
    "dotted domain": "x@" + "a." * 500_000,
    "url credentials": "://a:b@" * 142_857,
    "assignments": "password=" * 111_111,
    "phone groups": "(555) 555-" * 100_000,
    "full-width at signs": "a\uff20" * 500_000,
    "zero-width spaces": "a\u200b" * 500_000,
}
"""Megabytes built to make a careless pattern (or normalisation) backtrack or go quadratic."""


def _per_call_us(text: str, repeat: int) -> float:
    """Median of five timings of ``repeat`` scans of ``text``, in microseconds per scan."""
    runs = timeit.repeat(lambda: scan(text, max_chars=len(text)), number=repeat, repeat=5)
    return sorted(runs)[2] / repeat * 1e6


def run(repeat: int) -> dict[str, float]:
    """Microseconds per scan of the short prompts (mean), the 2 KB prompt, and seconds per
    hostile megabyte, keyed by name."""
    result = {
        "short_prompt_us": sum(_per_call_us(p, repeat) for p in _PROMPTS) / len(_PROMPTS),
        "prompt_2kb_us": _per_call_us(LONG_PROMPT, max(1, repeat // 10)),
    }
    for name, text in HOSTILE.items():
        started = time.perf_counter()
        scan(text, max_chars=len(text))
        result[f"hostile {name} s"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000, help="scans per timing (1-1e6)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= MAX_REPEAT:
        parser.error(f"--repeat: must be 1-{MAX_REPEAT}, got {args.repeat}")
    result = run(args.repeat)
    for name, value in result.items():
        print(f"{name:32} {value:10.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
