"""The fast embedding path gives what the plain numpy expression gives, and routing with it
decides as routing with the plain expression did.

The reference here is the embedding written the obvious way (each word's token rows summed in
float32, the total normalised by its float32 norm, rounded with ``np.round``), computed from
the model's own tokenizer and the table, not from the embedder's remembered rows."""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Sequence

import numpy as np
import pytest

from banditroute.config import settings_from_mapping
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.embedding import StaticEmbedder, packaged_model
from banditroute.embedding.static import (
    DECIMALS,
    MAX_CACHED_CHARS,
    LeadingComponents,
    _rounded,
)
from banditroute.features import extract
from banditroute.policies.costaware import SEMANTIC_DIMS, CostAwarePolicy
from banditroute.router import Router
from banditroute.store.memory import MemoryLog

PROMPTS = (
    "",
    "   ?!.,;: 12345 67.8",
    "What is the capital of Australia?",
    "Write a Python function that returns the n-th Fibonacci number using memoisation.",
    "The trophy doesn't fit into the brown suitcase because the _ is too large.",
    "Translate into French: naïve café, façade, Straße, Ωmega, ñandú and résumé.",
    "日本語のテキストを要約してください。 中文 한국어 тест по-русски",
    "emoji 🙂🚀 and e\u0301 combining marks, ﬁ ligatures, \uff26\uff35\uff2c\uff2c width letters",
    "hyphen-ated words, it's O'Brien's well-known co-operation re-entry",
    "unknownish zzzzqqq xylophonically antidisestablishmentarianism " + "q" * 30,
    "Summarize: " + "The committee met to review the budget and the plan. " * 400,
    " ".join(f"w{i}ord{i % 7}" for i in range(5000)),
)
"""Empty, punctuation and numbers only, plain English, apostrophes, accents, other scripts,
emoji and compatibility characters, split and unknown words, and very long prompts (extract
reads a bounded tail)."""


def _unit(table: np.ndarray, tokenizer: object, words: Sequence[str]) -> np.ndarray:
    """The float32 unit vector the obvious way: each word's token rows summed, the words'
    sums summed in order, divided by the float32 norm."""
    rows = []
    for word in words:
        ids = tokenizer.encode(word, add_special_tokens=False).ids  # type: ignore[attr-defined]
        rows.append(table[ids].sum(axis=0))
    total = np.stack(rows).sum(axis=0)
    norm = np.sqrt(total @ total)
    unit: np.ndarray = total / norm if norm > 0 else total
    return unit


def _reference(table: np.ndarray, tokenizer: object, words: Sequence[str]) -> np.ndarray:
    """The embedding the obvious way: the float32 unit vector, np.round-ed."""
    if not words:
        return np.zeros(table.shape[1])
    return np.round(_unit(table, tokenizer, words).astype(np.float64), DECIMALS)


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return packaged_model().load_tokenizer()


@pytest.fixture(scope="module")
def table(tokenizer: object) -> np.ndarray:
    """A random float32 table over the real vocabulary (distilling it takes minutes; the
    arithmetic checked here does not depend on where the rows came from)."""
    vocab = tokenizer.get_vocab(with_added_tokens=False)  # type: ignore[attr-defined]
    rng = np.random.default_rng(7)
    return rng.normal(0.0, 0.05, (len(vocab), 64)).astype(np.float32)


def _words(prompt: str) -> tuple[str, ...]:
    words: tuple[str, ...] = ()

    class Capture:
        def embed_words(self, given: Sequence[str]) -> tuple[float, ...]:
            nonlocal words
            words = tuple(given)
            return ()

    extract(prompt, embedder=Capture())
    return words


def test_embedding_equals_the_plain_numpy_expression(table: np.ndarray, tokenizer: object) -> None:
    """For every prompt (empty, very long, non-ASCII, unknown words...), embed_words gives
    the reference's values bit for bit, the signs of zeros included (they show in the logged
    JSON), first for words seen for the first time and again from their remembered rows;
    asking for the first 16 components gives exactly the first 16. Words too long to be
    remembered are added after the others, so there the sums may differ in the last float32
    bit: within one rounding step."""
    embedder = StaticEmbedder(table, tokenizer)
    for repeat in range(2):
        for prompt in PROMPTS:
            words = _words(prompt)
            expected = _reference(table, tokenizer, words)
            got = embedder.embed_words(words)
            assert len(got) == 64
            if any(len(w) > MAX_CACHED_CHARS for w in words):
                np.testing.assert_allclose(got, expected, atol=1.01 * 10.0**-DECIMALS)
                continue
            assert got == tuple(expected.tolist()), (repeat, prompt[:40])
            assert [math.copysign(1.0, x) for x in got] == [
                math.copysign(1.0, x) for x in expected.tolist()
            ], (repeat, prompt[:40])
            assert embedder.embed_words(words, SEMANTIC_DIMS) == got[:SEMANTIC_DIMS]
            assert embedder.leading(SEMANTIC_DIMS).embed_words(words) == got[:SEMANTIC_DIMS]
    assert _words(PROMPTS[0]) == ()
    assert embedder.embed_words((), SEMANTIC_DIMS) == (0.0,) * SEMANTIC_DIMS
    with pytest.raises(ValueError, match="components"):
        embedder.leading(65)


def test_unrounded_components_are_the_float32_values_bit_for_bit(
    table: np.ndarray, tokenizer: object
) -> None:
    """Before rounding, the fast path's components are exactly the float32 unit vector's
    (a norm or a quotient left in double precision would differ in most components): on
    2,000 random word sets of whole words, word pieces and unknown words, seen the first
    time and again."""
    embedder = StaticEmbedder(table, tokenizer)
    vocab = sorted(tokenizer.get_vocab(with_added_tokens=False))  # type: ignore[attr-defined]
    whole = [t for t in vocab if t.isalpha() and t.isascii()]
    rng = np.random.default_rng(11)
    sets = []
    for _ in range(2000):
        words = [str(w) for w in rng.choice(whole, size=int(rng.integers(1, 40)))]
        words.append("".join(rng.choice(list("abcdefghijklmnopqrstuvwxyzé"), size=9)))
        sets.append(tuple(dict.fromkeys(words)))
    for words in sets + sets:
        expected = _unit(table, tokenizer, words).tolist()
        assert embedder.unit_head(words, 64) == expected
        assert embedder.unit_head(words, SEMANTIC_DIMS) == expected[:SEMANTIC_DIMS]


def test_rounding_is_numpys_round_with_the_sign_of_zero() -> None:
    """The components are rounded as np.round rounds them (halves to even, after scaling),
    and a component rounded to zero keeps its sign, as numpy's does: on half a million
    values, many of them ties, near zero, or large."""
    rng = np.random.default_rng(5)
    values = np.concatenate(
        [
            rng.normal(0.0, 0.2, 200_000),
            rng.normal(0.0, 1e-4, 200_000),
            (rng.integers(-20_000, 20_000, 100_000) + 0.5) / 10.0**DECIMALS,
            [0.0, -0.0, 5e-5, -5e-5, 1.5e-4, -2.5e-4, 123.45675, -1e6],
        ]
    )
    expected = np.round(values, DECIMALS).tolist()
    got = _rounded(values.tolist())
    assert got == tuple(expected)
    assert [math.copysign(1.0, x) for x in got] == [math.copysign(1.0, x) for x in expected]


def test_a_zero_sum_is_left_unnormalised(tokenizer: object) -> None:
    """Words whose rows sum to zeros embed as zeros (no division by a zero norm)."""
    vocab = tokenizer.get_vocab(with_added_tokens=False)  # type: ignore[attr-defined]
    embedder = StaticEmbedder(np.zeros((len(vocab), 8), dtype=np.float32), tokenizer)
    assert embedder.embed_words(("the", "cat")) == (0.0,) * 8


class _Reference:
    """The plain numpy embedding, all 64 components (what the features held before)."""

    def __init__(self, table: np.ndarray, tokenizer: object) -> None:
        self.table, self.tokenizer = table, tokenizer

    def embed_words(self, words: Sequence[str]) -> tuple[float, ...]:
        return tuple(_reference(self.table, self.tokenizer, words).tolist())


def _decide(embedder: object, seed: int) -> list[tuple[str, tuple[float, ...]]]:
    """A seeded stream of Routes and Feedbacks through the cost-aware policy reading the
    embedding: each decision's model and probabilities."""
    settings = settings_from_mapping({})
    policy = CostAwarePolicy(seed=seed, semantic_dims=SEMANTIC_DIMS)
    steps = itertools.count()
    router = Router(
        settings, policy, MemoryLog(), seed=seed, embedder=embedder,  # type: ignore[arg-type]
        new_id=lambda: f"d{next(steps):05d}",
    )  # fmt: skip
    subjects = ("python code", "french poem", "algebra equation", "history of rome")
    out = []
    for step in range(160):
        subject = subjects[step % len(subjects)]
        prompt = f"{PROMPTS[step % len(PROMPTS)][-300:]} about {subject} number {step}"
        decision = router.route(RouteQuery(prompt=prompt))
        out.append((decision.model, tuple(p for _, p in decision.ranking)))
        # A quality that depends on the subject and the model: the embedding matters.
        quality = 1.0 if zlib.crc32(f"{decision.model} {subject}".encode()) % 3 else 0.0
        router.feedback(
            FeedbackReport(decision_id=decision.decision_id, quality=quality, cost_usd=0.001)
        )
    return out


def test_decisions_with_semantic_features_are_unchanged(
    table: np.ndarray, tokenizer: object
) -> None:
    """With a fixed seed, routing on the fast embedding's first 16 components (what the
    service's features now hold) makes the same decisions, with the same probabilities, as
    routing on the plain numpy embedding's 64 (the policy reads the first 16); and the log
    holds the 16."""
    fast = LeadingComponents(StaticEmbedder(table, tokenizer), SEMANTIC_DIMS)
    assert _decide(fast, seed=3) == _decide(_Reference(table, tokenizer), seed=3)
    log = MemoryLog()
    Router(settings_from_mapping({}), CostAwarePolicy(seed=0), log, embedder=fast).route(
        RouteQuery(prompt="What is the capital of Australia?")
    )
    assert len(log.decisions[0].features["embedding"]) == SEMANTIC_DIMS


def test_the_simulator_gives_a_policy_reading_more_components_as_many() -> None:
    """The service's features hold the 16 components its policy reads; a simulated
    ``costaware:semantic_dims=N`` reading more gets N (not 16 and zeros), any other policy
    the 16."""
    from banditroute.simulation.policies import embedding_components

    assert embedding_components("costaware") == SEMANTIC_DIMS
    assert embedding_components("vw") == SEMANTIC_DIMS
    assert embedding_components("costaware:semantic_dims=32") == 32
    assert embedding_components("costaware:semantic_dims=8,noise=0.3") == SEMANTIC_DIMS
