"""Distil a BERT sentence encoder into a static table: one vector per vocabulary token.

Each token is passed through the encoder alone (``[CLS] token [SEP]``), mean-pooled and
normalised; the vectors are centred and reduced by PCA to a few dozen dimensions, and each row
is scaled by a Zipf weight (vocabulary order stands in for frequency, so frequent tokens such
as "the" count less than rare, topical ones). A prompt's embedding is then the normalised sum
of its tokens' rows (:class:`~banditroute.embedding.static.StaticEmbedder`): microseconds, not
the encoder's milliseconds. This is the model2vec idea, written here with numpy alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from banditroute.embedding.bert import Array, BertEncoder

Weighting = Literal["none", "zipf"]
WEIGHTINGS: tuple[str, ...] = ("none", "zipf")
BATCH = 256
"""Tokens per encoder batch while distilling."""


@dataclass(frozen=True)
class DistilSpec:
    """How a table is distilled: its dimension and token weighting."""

    dims: int = 64
    weighting: Weighting = "zipf"

    def __post_init__(self) -> None:
        if not 1 <= self.dims <= 1024:
            raise ValueError(f"dims: {self.dims} is not in 1..1024")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting: {self.weighting!r} is not one of {WEIGHTINGS}")


DEFAULT_SPEC = DistilSpec()
"""The dimension and weighting Route uses (chosen by simulations/semantic_gain.py)."""


def token_vectors(
    encoder: BertEncoder,
    token_ids: npt.NDArray[np.int64],
    *,
    cls_id: int,
    sep_id: int,
    progress: bool = False,
) -> Array:
    """The encoder's normalised embedding of each token alone, ``(len(token_ids), hidden)``."""
    out = np.empty((len(token_ids), encoder.config.hidden_size), dtype=np.float32)
    starts = range(0, len(token_ids), BATCH)
    for start in tqdm(starts, desc="distilling token vectors", unit="batch", disable=not progress):
        chunk = token_ids[start : start + BATCH]
        ids = np.empty((len(chunk), 3), dtype=np.int64)
        ids[:, 0], ids[:, 1], ids[:, 2] = cls_id, chunk, sep_id
        out[start : start + len(chunk)] = encoder.sentence_embeddings(
            ids, np.ones(ids.shape, dtype=np.bool_)
        )
    return out


def pca(vectors: Array, dims: int) -> tuple[Array, Array]:
    """The mean and the top ``dims`` principal directions (``(dims, hidden)``, largest first,
    each with a deterministic sign: its largest-magnitude entry is positive)."""
    mean = vectors.mean(axis=0)
    centred = (vectors - mean).astype(np.float64)
    values, directions = np.linalg.eigh(centred.T @ centred)
    top = directions[:, np.argsort(values)[::-1][: min(dims, vectors.shape[1])]].T
    signs = np.sign(top[np.arange(len(top)), np.abs(top).argmax(axis=1)])
    return mean.astype(np.float32), (top * signs[:, None]).astype(np.float32)


def zipf_weights(token_ids: npt.NDArray[np.int64]) -> Array:
    """log(1 + rank), the vocabulary position standing in for the frequency rank (WordPiece
    vocabularies list frequent tokens first): rarer tokens weigh more."""
    weights: Array = np.log1p(token_ids.astype(np.float32) + 1.0)
    return weights


class Distilled(NamedTuple):
    """A distilled table and the PCA basis it was projected on (kept with the table, so that
    any token's row can be checked against the model without distilling the vocabulary)."""

    table: Array
    """``(vocab_size, dims)``: one row per token (zero for tokens not distilled)."""
    mean: Array
    """``(hidden,)``: the mean token vector subtracted before projecting."""
    directions: Array
    """``(dims, hidden)``: the principal directions projected on."""


def project(
    vectors: Array, token_ids: npt.NDArray[np.int64], mean: Array, directions: Array,
    weighting: Weighting,
) -> Array:  # fmt: skip
    """The table rows of tokens whose encoder vectors are ``vectors``: centred, projected on
    the principal ``directions`` and, under ``zipf`` weighting, scaled by the token's weight."""
    reduced: Array = ((vectors - mean) @ directions.T).astype(np.float32)
    if weighting == "zipf":
        reduced *= zipf_weights(token_ids)[:, None]
    return reduced


def distil(
    encoder: BertEncoder,
    spec: DistilSpec,
    *,
    cls_id: int,
    sep_id: int,
    token_ids: Sequence[int] | None = None,
    progress: bool = False,
) -> Distilled:
    """The static table ``(vocab_size, spec.dims)`` with its basis: rows of the tokens in
    ``token_ids`` (all of the vocabulary by default); other rows are zero, so they add nothing
    to a sum."""
    vocab = encoder.config.vocab_size
    ids = np.arange(vocab, dtype=np.int64) if token_ids is None else np.unique(token_ids)
    if len(ids) == 0 or ids[0] < 0 or ids[-1] >= vocab:
        raise ValueError(f"token_ids: must be a non-empty subset of 0..{vocab - 1}")
    vectors = token_vectors(encoder, ids, cls_id=cls_id, sep_id=sep_id, progress=progress)
    mean, directions = pca(vectors, spec.dims)
    table = np.zeros((vocab, directions.shape[0]), dtype=np.float32)
    table[ids] = project(vectors, ids, mean, directions, spec.weighting)
    return Distilled(table, mean, directions)
