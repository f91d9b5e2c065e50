"""The semantic features' table shipped in the package: what the installed model distils to,
what the default settings route with, and a clear error when the install is damaged."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tiny_model import write_tiny_model

from banditroute.config import settings_from_mapping
from banditroute.decisions import RouteQuery
from banditroute.embedding import DEFAULT_SPEC, packaged_embedder, packaged_model
from banditroute.embedding import packaged as packaged_module
from banditroute.embedding.cache import Provenance, file_sha256, read_table
from banditroute.embedding.distil import project, token_vectors
from banditroute.errors import ConfigError
from banditroute.features import extract
from banditroute.policies.costaware import SEMANTIC_DIMS
from banditroute.policies.uniform import UniformPolicy
from banditroute.router import Router
from banditroute.store.memory import MemoryLog

CODE_A = "Write a python function that sorts a list of numbers and returns it."
CODE_B = "Implement a javascript method to sort an array of integers in ascending order."
POEM = "Compose a short poem about the autumn forest and its falling golden leaves."


@pytest.fixture
def fresh_embedder() -> Iterator[None]:
    """packaged_embedder is built once per process: cleared before and after a test that
    loads it from a moved or damaged file."""
    packaged_embedder.cache_clear()
    yield
    packaged_embedder.cache_clear()


def test_the_shipped_table_is_what_the_installed_model_distils_to() -> None:
    """The table records the digest of the model package it was distilled from (the one the
    dev extra installs) and ships that model's tokenizer; rows of a spread of tokens, from the
    encoder and the stored PCA basis, equal the shipped rows to float16 precision, and the
    basis is orthonormal."""
    files = packaged_model()
    origin = Provenance(files.digest(), file_sha256(files.tokenizer))
    distilled = read_table(packaged_module.TABLE, DEFAULT_SPEC, origin)
    assert distilled is not None, "the shipped table was not distilled from this model"
    assert packaged_module.TOKENIZER.read_bytes() == files.tokenizer.read_bytes()
    table, mean, directions = distilled
    tokenizer = files.load_tokenizer()
    assert table.shape == (tokenizer.get_vocab_size(), DEFAULT_SPEC.dims)
    np.testing.assert_allclose(directions @ directions.T, np.eye(DEFAULT_SPEC.dims), atol=1e-4)
    prompt_ids = {i for p in (CODE_A, POEM) for i in tokenizer.encode(p).ids}
    ids = np.unique(np.r_[np.arange(1000, len(table), 211), sorted(prompt_ids)]).astype(np.int64)
    vectors = token_vectors(files.encoder(), ids, cls_id=tokenizer.token_to_id("[CLS]"),
                            sep_id=tokenizer.token_to_id("[SEP]"))  # fmt: skip
    rows = project(vectors, ids, mean, directions, DEFAULT_SPEC.weighting)
    scale = float(np.abs(rows).max())
    np.testing.assert_allclose(table[ids], rows, rtol=2e-3, atol=1e-4 * scale)


def test_default_settings_route_with_the_shipped_embedding(fresh_embedder: None) -> None:
    """A Router on the default settings embeds every prompt with the shipped table (no model
    package or cache file involved): the logged embedding has the components the policy
    reads, and prompts asking for the same thing embed closer than unrelated ones."""
    router = Router(settings_from_mapping({}), UniformPolicy(), log := MemoryLog())
    router.route(RouteQuery(prompt=CODE_A))
    logged = list(log.decisions[0].features["embedding"])
    assert len(logged) == SEMANTIC_DIMS
    assert 0.0 < float(np.linalg.norm(logged)) <= 1.0 + 1e-6
    full = packaged_embedder()
    a, b, poem = (np.array(extract(p, embedder=full).embedding) for p in (CODE_A, CODE_B, POEM))
    assert logged == pytest.approx(list(a[:SEMANTIC_DIMS]), abs=1e-4)
    assert a @ b > max(a @ poem, b @ poem) + 0.1


@pytest.mark.parametrize(
    "damage",
    ["table missing", "table flipped", "tokenizer missing", "tokenizer garbage",
     "tokenizer of another model"],
)  # fmt: skip
def test_a_damaged_install_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fresh_embedder: None, damage: str
) -> None:
    """A shipped table that is missing or fails its digest (a flipped byte), or a tokenizer
    that is missing, garbage or not the one the table was made for (its ids would pick the
    wrong rows), is a ConfigError naming features.semantic and saying how to repair the
    install: never a crash, and never embeddings from a mismatched pair."""
    table, tokenizer = tmp_path / "table.safetensors", tmp_path / "tokenizer.json"
    shutil.copyfile(packaged_module.TABLE, table)
    shutil.copyfile(packaged_module.TOKENIZER, tokenizer)
    if damage == "table flipped":
        data = bytearray(table.read_bytes())
        data[-100] ^= 0x10
        table.write_bytes(bytes(data))
    elif damage == "table missing":
        table.unlink()
    elif damage == "tokenizer missing":
        tokenizer.unlink()
    elif damage == "tokenizer garbage":
        tokenizer.write_text('{"version": "1.0", "model": ', "utf-8")
    else:
        shutil.copyfile(write_tiny_model(tmp_path / "tiny").tokenizer, tokenizer)
    monkeypatch.setattr(packaged_module, "TABLE", table)
    monkeypatch.setattr(packaged_module, "TOKENIZER", tokenizer)
    with pytest.raises(ConfigError, match="reinstall banditroute") as info:
        Router(settings_from_mapping({}), UniformPolicy(), MemoryLog())
    assert info.value.field == "features.semantic"
