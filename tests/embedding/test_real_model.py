"""The packaged all-MiniLM-L6-v2 (the ``semantic`` extra, installed with the dev extra),
distilled over a truncated vocabulary: the tokens the test prompts need and a few hundred
common words, so the test takes seconds rather than the full vocabulary's minutes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from banditroute.embedding import DEFAULT_SPEC, StaticEmbedder, ensure_table, packaged_model
from banditroute.features import extract

CODE_A = "Write a python function that sorts a list of numbers and returns it."
CODE_B = "Implement a javascript method to sort an array of integers in ascending order."
POEM = "Compose a short poem about the autumn forest and its falling golden leaves."
COMMON_TOKENS = range(1996, 2300)
"""WordPiece ids of common English words (the vocabulary lists them by frequency)."""


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> StaticEmbedder:
    files = packaged_model()
    tokenizer = files.load_tokenizer()
    needed = {i for p in (CODE_A, CODE_B, POEM) for i in tokenizer.encode(p).ids}
    path = Path(tmp_path_factory.mktemp("semantic")) / "table.safetensors"
    table = ensure_table(path, files, DEFAULT_SPEC, token_ids=sorted(needed | set(COMMON_TOKENS)))
    return StaticEmbedder(table, tokenizer)


def _cos(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_similar_prompts_embed_closer_than_unrelated_ones(embedder: StaticEmbedder) -> None:
    """Two prompts asking for sorting code are closer to each other than either is to a
    poem request, as with the full model; embeddings have unit length and the default
    number of components."""
    a, b, poem = (extract(p, embedder=embedder).embedding for p in (CODE_A, CODE_B, POEM))
    assert len(a) == DEFAULT_SPEC.dims == 64
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-3)
    assert _cos(a, b) > _cos(a, poem) + 0.1
    assert _cos(a, b) > _cos(b, poem) + 0.1

    files = packaged_model()
    tokenizer = files.load_tokenizer()
    encoded = [tokenizer.encode(p).ids for p in (CODE_A, CODE_B, POEM)]
    length = max(map(len, encoded))
    ids = np.zeros((3, length), dtype=np.int64)
    mask = np.zeros(ids.shape, dtype=np.bool_)
    for row, sentence in enumerate(encoded):
        ids[row, : len(sentence)], mask[row, : len(sentence)] = sentence, True
    full = files.encoder().sentence_embeddings(ids, mask)
    assert full[0] @ full[1] > max(full[0] @ full[2], full[1] @ full[2])


def test_static_embedder_splits_words_as_the_model_tokenizer_does(
    embedder: StaticEmbedder,
) -> None:
    """Whole vocabulary words map to their own token (whose row is copied for the word once
    seen); others to the tokenizer's pieces."""
    tokenizer = packaged_model().load_tokenizer()
    for word in ("sort", "javascript", "ascending", "unsortedness", "naïve", "don't"):
        assert embedder.token_ids(word) == tuple(
            tokenizer.encode(word, add_special_tokens=False).ids
        )
    assert embedder._token_of["sort"] == tokenizer.token_to_id("sort")
    embedder.embed_words(["sort"])
    np.testing.assert_array_equal(
        embedder._rows[embedder._row_of["sort"]], embedder.table[tokenizer.token_to_id("sort")]
    )
