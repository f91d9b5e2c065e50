"""CPU the semantic embedding adds to feature extraction (so to every Route).

With the embedder, :func:`banditroute.features.extract` does one thing more: it passes the
distinct words it has already found in the prompt's tail to ``embed_words``. This times that
call (median of several rounds, calling thread's CPU clock) for the SEMANTIC_DIMS components
the service's features hold and for all of the table's, on short prompts and on 2 KB prompts,
and extract alone for scale. Here the table rows and numpy stay in the CPU's caches; on a
Route they mostly do not (``route_cpu.py`` measures that). The "novel" case gives every call
2 KB of words never seen before: each one is split by the tokenizer once (the worst case, until
MAX_CACHED_WORDS words have rows). The table is read from ``--cache`` (distilled there first
if needed: minutes). Usage::

    python benchmarks/embedding_cpu.py [--cache PATH] [--calls 2000] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from route_latency import _PROMPTS

from banditroute.embedding import load_static_embedder, packaged_embedder
from banditroute.features import _WORD, WORDS_TAIL_CHARS, Embedder, extract
from banditroute.policies.costaware import SEMANTIC_DIMS

ROUNDS = 7
MAX_CALLS = 100_000
_FEW_SHOT = (
    "Question: Which gas do plants absorb from the air for photosynthesis?\n"
    "A) oxygen\nB) carbon dioxide\nC) nitrogen\nD) helium\nAnswer: B\n\n"
)


def long_prompts(count: int) -> list[str]:
    """2 KB few-shot style prompts, each ending in a different question."""
    return [
        (_FEW_SHOT * 20)[: 2048 - 80] + f"\nQuestion {i}: {_PROMPTS[i % len(_PROMPTS)]}"[:80]
        for i in range(count)
    ]


def novel_prompts(count: int, seed: int = 0) -> list[str]:
    """2 KB prompts of random words, none repeated across prompts."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = []
        while sum(len(w) + 1 for w in words) < 2048:
            words.append("".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 10))))
        out.append(" ".join(words)[:2048])
    return out


def _per_call_us(items: Sequence[Any], fn: Callable[[Any], object]) -> float:
    start = time.thread_time()
    for item in items:
        fn(item)
    return (time.thread_time() - start) / len(items) * 1e6


def _words(prompt: str) -> tuple[str, ...]:
    """What extract hands the embedder: the distinct words of the prompt's tail."""
    return tuple(dict.fromkeys(_WORD.findall(prompt[-WORDS_TAIL_CHARS:].lower())))


def run(
    embedder: Embedder, calls: int, whole: Embedder | None = None
) -> dict[str, dict[str, float]]:
    """Median per-call CPU (µs) of the embedding extract adds (``embed_words`` on the words
    extract found) and, for scale, of extract itself, per prompt kind; with ``whole``, also
    of that embedder (all the table's components, where ``embedder`` gives the service's)."""
    short = [f"{_PROMPTS[i % len(_PROMPTS)]} #{i}" for i in range(calls)]
    results: dict[str, dict[str, float]] = {}
    for kind, prompts in {"short": short, "2kb": long_prompts(calls)}.items():
        words = [_words(p) for p in prompts]
        for item in words[:50]:
            embedder.embed_words(item)
        added = [_per_call_us(words, embedder.embed_words) for _ in range(ROUNDS)]
        plain = [_per_call_us(prompts, extract) for _ in range(ROUNDS)]
        results[kind] = {
            "chars": statistics.mean(map(len, prompts)),
            "words": statistics.mean(map(len, words)),
            "extract_us": statistics.median(plain),
            "added_us": statistics.median(added),
        }
        if whole is not None:
            every = [_per_call_us(words, whole.embed_words) for _ in range(ROUNDS)]
            results[kind]["added_all_components_us"] = statistics.median(every)
    novel = [_words(p) for p in novel_prompts(min(calls, 300))]
    results["2kb_novel_words"] = {
        "chars": 2048.0,
        "words": statistics.mean(map(len, novel)),
        "extract_us": float("nan"),
        "added_us": _per_call_us(novel, embedder.embed_words),
    }
    return results


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="table file (default: the shipped table)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per round and kind")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not 0 < args.calls <= MAX_CALLS:
        parser.error(f"--calls must be in 1..{MAX_CALLS}")
    whole = (
        packaged_embedder()
        if args.cache is None
        else load_static_embedder(args.cache.expanduser(), progress=True)
    )
    results = run(whole.leading(SEMANTIC_DIMS), args.calls, whole)
    for kind, r in results.items():
        every = r.get("added_all_components_us")
        print(
            f"{kind:16s} {r['chars']:5.0f} chars, {r['words']:3.0f} distinct tail words: "
            f"embedding adds {r['added_us']:6.1f} µs CPU (extract alone {r['extract_us']:.1f}"
            + ("" if every is None else f"; all {whole.dims} components {every:.1f}")
            + ")"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
