"""Distillation into a static table, its cache file, and the static embedder, on a tiny
random model written by the test (the real model's 30k-token vocabulary takes minutes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from tiny_model import write_tiny_model

from banditroute.embedding import DistilSpec, ModelFiles, StaticEmbedder, ensure_table
from banditroute.embedding import load as load_module
from banditroute.embedding import static as static_module
from banditroute.embedding.distil import Distilled

SPEC = DistilSpec(dims=4, weighting="zipf")


@pytest.fixture
def files(tmp_path: Path) -> ModelFiles:
    return write_tiny_model(tmp_path / "model")


@pytest.fixture
def distils(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the distillations ensure_table runs."""
    calls: list[int] = []
    real = load_module.distil

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(load_module, "distil", counting)
    return calls


def test_distilled_table_is_deterministic_and_read_back_from_its_cache(
    files: ModelFiles, tmp_path: Path, distils: list[int]
) -> None:
    """Two distillations of one model give the same table; the second call with the same
    cache path reads the file instead of distilling again."""
    first = ensure_table(tmp_path / "a.safetensors", files, SPEC)
    again = ensure_table(tmp_path / "b.safetensors", files, SPEC)
    cached = ensure_table(tmp_path / "a.safetensors", files, SPEC)
    assert len(distils) == 2
    assert first.shape == (len(files.load_tokenizer().get_vocab()), SPEC.dims)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, cached)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_a_corrupt_cache_file_is_distilled_again(
    files: ModelFiles, tmp_path: Path, distils: list[int], damage: str
) -> None:
    """A flipped byte in the table, a truncated file, garbage or an empty file is not
    used: the table is distilled again (the same one) and the file rewritten intact."""
    path = tmp_path / "table.safetensors"
    table = ensure_table(path, files, SPEC)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-3] ^= 0x40
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"\xff" * 64)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(ensure_table(path, files, SPEC), table)
    assert len(distils) == 2
    np.testing.assert_array_equal(ensure_table(path, files, SPEC), table)
    assert len(distils) == 2


def test_a_cache_from_another_model_or_spec_is_distilled_again(
    files: ModelFiles, tmp_path: Path, distils: list[int]
) -> None:
    """The file records the source model's digest and the distillation settings: other
    weights, another dimension or a truncated vocabulary do not reuse it."""
    path = tmp_path / "table.safetensors"
    table = ensure_table(path, files, SPEC)
    assert ensure_table(path, files, DistilSpec(dims=3, weighting="zipf")).shape[1] == 3
    assert ensure_table(path, files, SPEC, token_ids=[2, 3, 4, 5]).any(axis=1).sum() == 4
    other = write_tiny_model(tmp_path / "other", seed=1)
    assert not np.array_equal(ensure_table(path, other, SPEC), table)
    assert len(distils) == 4


def test_static_embedding_is_the_normalised_sum_of_the_words_token_rows(
    files: ModelFiles, tmp_path: Path
) -> None:
    """A word the vocabulary holds whole is its token's row; any other word is split by the
    model's tokenizer (pieces, [UNK]) and its pieces' rows added; the sum is normalised. The
    same words give the same embedding again (from the remembered rows), and none give
    zeros."""
    table = ensure_table(tmp_path / "t.safetensors", files, SPEC)
    tokenizer = files.load_tokenizer()
    embedder = StaticEmbedder(table, tokenizer)
    words = ["the", "cats", "unknown", "sat", "zzz", "x" * 40, "cats"]
    ids = [i for w in words for i in tokenizer.encode(w, add_special_tokens=False).ids]
    expected = table[ids].sum(axis=0)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(embedder.vector(words), expected, atol=1e-6)
    np.testing.assert_allclose(embedder.vector(words), expected, atol=1e-6)
    got = embedder.embed_words(words)
    assert got == tuple(round(float(x), 4) for x in expected)
    assert embedder.embed_words([]) == (0.0,) * SPEC.dims


def test_rows_for_new_words_are_bounded(
    files: ModelFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only MAX_CACHED_WORDS novel words get a row of their own; later ones are still
    embedded correctly, by splitting them each time."""
    monkeypatch.setattr(static_module, "MAX_CACHED_WORDS", 2)
    table = ensure_table(tmp_path / "t.safetensors", files, SPEC)
    tokenizer = files.load_tokenizer()
    embedder = StaticEmbedder(table, tokenizer)
    novel = ["cats", "dogs", "mats", "unknowns"]
    for word in novel:
        ids = tokenizer.encode(word, add_special_tokens=False).ids
        expected = table[ids].sum(axis=0)
        np.testing.assert_allclose(
            embedder.vector([word]), expected / np.linalg.norm(expected), atol=1e-6
        )
    assert sum(word in embedder._row_of for word in novel) == 2


def test_rows_are_kept_densely_in_the_order_words_are_first_seen(
    files: ModelFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A word's row goes, when the word is first seen, to the next row of a dense table,
    whatever its token id: the words a stream uses sit together from the start. A word the
    vocabulary holds whole always gets its token's row there; a novel word gets its pieces'
    sum only while fewer than MAX_CACHED_WORDS novel words have a row. Embeddings are the
    same as a fresh embedder's, from the copied rows or not."""
    monkeypatch.setattr(static_module, "MAX_CACHED_WORDS", 2)
    table = ensure_table(tmp_path / "t.safetensors", files, SPEC)
    tokenizer = files.load_tokenizer()
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    embedder = StaticEmbedder(table, tokenizer)
    first = ["capital", "cats", "the", "dogs"]
    got = embedder.embed_words(first)
    assert embedder._row_of == {"capital": 0, "cats": 1, "the": 2, "dogs": 3}
    np.testing.assert_array_equal(embedder._rows[0], table[vocab["capital"]])
    cats = tokenizer.encode("cats", add_special_tokens=False).ids
    np.testing.assert_array_equal(embedder._rows[1], table[cats].sum(axis=0))
    again = ["mats", "python", "capital"]
    embedder.embed_words(again)
    assert embedder._row_of == {"capital": 0, "cats": 1, "the": 2, "dogs": 3, "python": 4}
    assert not embedder._rows[5:].any()
    assert embedder.embed_words(first) == got == StaticEmbedder(table, tokenizer).embed_words(first)
    fresh = StaticEmbedder(table, tokenizer)
    assert embedder.embed_words(again) == fresh.embed_words(again) == fresh.embed_words(again)


def test_a_table_that_is_not_finite_is_never_written_nor_used(
    files: ModelFiles, tmp_path: Path, distils: list[int]
) -> None:
    """Rows past float16's range (they would be read back as infinite) are refused when a
    table is stored; a file holding a NaN, even under a matching digest, is distilled again
    rather than fed to the policy."""
    from safetensors.numpy import save_file

    from banditroute.embedding import cache

    path = tmp_path / "table.safetensors"
    table = ensure_table(path, files, SPEC)
    with safe_open(str(path), framework="numpy") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {name: handle.get_tensor(name) for name in cache.TENSORS}
    with pytest.raises(ValueError, match="finite"):
        cache.stored(Distilled(tensors["table"] * np.float32(1e6), tensors["mean"],
                               tensors["directions"]))  # fmt: skip
    tensors["table"] = tensors["table"].copy()
    tensors["table"][3, 1] = np.nan
    origin = cache.Provenance(metadata["source_sha256"], metadata["tokenizer_sha256"])
    save_file(tensors, str(path), metadata=cache._metadata(SPEC, origin, tensors))
    np.testing.assert_array_equal(ensure_table(path, files, SPEC), table)
    assert len(distils) == 2


def test_a_version_1_cache_file_is_named_stale_and_distilled_again(
    files: ModelFiles, tmp_path: Path, distils: list[int]
) -> None:
    """A cache file of the earlier format (a float32 table without its basis) is reported as
    stale by its format, not as unreadable, and distilled again."""
    from safetensors.numpy import save_file
    from structlog.testing import capture_logs

    path = tmp_path / "table.safetensors"
    save_file({"table": np.zeros((40, SPEC.dims), np.float32)}, str(path),
              metadata={"format": "banditroute-static-embedding/1"})  # fmt: skip
    with capture_logs() as logs:
        ensure_table(path, files, SPEC)
    assert len(distils) == 1
    stale = [e for e in logs if e["event"] == "embedding_cache_stale_or_corrupt"]
    assert stale
    assert stale[0]["mismatched"] == ["format"]
    assert not [e for e in logs if e["event"] == "embedding_cache_unreadable"]
