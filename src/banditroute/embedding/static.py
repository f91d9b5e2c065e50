"""The static embedder Route uses: a prompt's words looked up in the distilled token table,
summed and normalised, in a few microseconds.

It takes the distinct words :func:`banditroute.features.extract` has already found in the
prompt's tail (lower-cased; numbers and punctuation left out), so the prompt is not scanned
twice. Every word maps to one row: a word the vocabulary holds whole is its token's row;
another is split once by the model's own tokenizer and gets a row of its own, the sum of its
pieces' rows (up to :data:`MAX_CACHED_WORDS` such words, so a stream of novel words cannot
grow memory without bound; past that, or for very long words, the pieces are summed each
time).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from banditroute.embedding.bert import Array

MAX_CACHED_WORDS = 100_000
"""Words beyond the vocabulary's own that get a row (reserved lazily: untouched rows cost
no memory)."""
MAX_CACHED_CHARS = 32
"""Longer words (hashes, identifiers) are split each time rather than given a row."""
DECIMALS = 4
"""Embedding components are rounded to this many decimals, so the log holds what the
policy saw, in about 8 characters a component."""


class StaticEmbedder:
    """Prompt embeddings from a static token table ``(vocab, dims)`` and the model's
    ``tokenizers.Tokenizer`` (for words the vocabulary does not hold whole)."""

    def __init__(self, table: Array, tokenizer: Any) -> None:
        vocab = tokenizer.get_vocab(with_added_tokens=False)
        if table.ndim != 2 or table.shape[0] < len(vocab):
            raise ValueError(f"table: shape {table.shape} does not cover {len(vocab)} tokens")
        self.dims = int(table.shape[1])
        self._tokens = len(table)
        # np.zeros maps fresh pages: the reserved rows take memory only once written.
        self._rows = np.zeros((self._tokens + MAX_CACHED_WORDS, self.dims), dtype=np.float32)
        self._rows[: self._tokens] = table
        self._tokenizer = tokenizer
        # A whole ASCII word of the vocabulary is its own single token (WordPiece matches the
        # longest prefix first); non-ASCII ones may be normalised (accents stripped) first.
        self._row_of: dict[str, int] = {
            token: index
            for token, index in vocab.items()
            if token.isascii() and token.isalnum() and token == token.lower()
        }
        self._next_row = self._tokens
        self._adding = threading.Lock()
        self.zero: tuple[float, ...] = (0.0,) * self.dims

    @property
    def table(self) -> Array:
        """The distilled token table ``(vocab, dims)``."""
        table: Array = self._rows[: self._tokens]
        return table

    def token_ids(self, word: str) -> tuple[int, ...]:
        """The WordPiece ids of one word, as the model's tokenizer splits it. A lower-case
        ASCII word of letters and digits needs no normalising or pre-splitting, so it goes to
        the WordPiece model directly (a third of the whole pipeline's cost)."""
        if word.isascii() and word.isalnum() and word.islower():
            return tuple(token.id for token in self._tokenizer.model.tokenize(word))
        return tuple(self._tokenizer.encode(word, add_special_tokens=False).ids)

    def _new_word(self, word: str) -> tuple[int | None, Array]:
        """A row for a word seen for the first time (None when it gets none), and its sum."""
        total: Array = self._rows[list(self.token_ids(word))].sum(axis=0)
        if len(word) > MAX_CACHED_CHARS:
            return None, total
        with self._adding:
            row = self._row_of.get(word)
            if row is None and self._next_row < len(self._rows):
                row = self._next_row
                self._rows[row] = total  # written before the word is published
                self._row_of[word] = row
                self._next_row += 1
        return row, total

    def vector(self, words: Sequence[str]) -> Array:
        """The normalised sum of the words' rows (zeros when there are none)."""
        rows = list(map(self._row_of.get, words))
        extra: Array | None = None
        if None in rows:
            for index, row in enumerate(rows):
                if row is None:
                    rows[index], total = self._new_word(words[index])
                    if rows[index] is None:
                        extra = total if extra is None else extra + total
            rows = [row for row in rows if row is not None]
        total = self._rows[np.array(rows, dtype=np.intp)].sum(axis=0)
        if extra is not None:
            total += extra
        norm = float(np.sqrt(total @ total))
        out: Array = total / norm if norm > 0 else total
        return out

    def embed_words(self, words: Sequence[str]) -> tuple[float, ...]:
        """:meth:`vector` rounded to :data:`DECIMALS`, as plain floats for the features."""
        if not words:
            return self.zero
        rounded: list[float] = np.round(self.vector(words).astype(np.float64), DECIMALS).tolist()
        return tuple(rounded)
