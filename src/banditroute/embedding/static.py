"""The static embedder Route uses: a prompt's words looked up in the distilled token table,
summed and normalised, in a few microseconds.

It takes the distinct words :func:`banditroute.features.extract` has already found in the
prompt's tail (lower-cased; numbers and punctuation left out), so the prompt is not scanned
twice. Every word maps to one row: a word the vocabulary holds whole is its token's row;
another is split once by the model's own tokenizer and gets a row of its own, the sum of its
pieces' rows (up to :data:`MAX_CACHED_WORDS` such words, so a stream of novel words cannot
grow memory without bound; past that, or for very long words, the pieces are summed each
time). A word's row is copied, when the word is first seen, into a dense table in the order
words are first seen, so the rows and the dictionary a stream's common words use are small
and together rather than spread over the whole vocabulary's.

On a Route the table, the word dictionary and numpy's own code are mostly out of the CPU's
caches, where each numpy call costs several microseconds: :meth:`StaticEmbedder.embed_words`
makes four (gather, sum, dot product, the float32 quotients of the components wanted) and
rounds in Python, with float32 arithmetic reproduced exactly (a double-precision square root
of a float32 value, rounded to float32, is the float32 result), so it returns what the numpy
expression in :meth:`StaticEmbedder.vector` rounds to.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections.abc import Iterable, Sequence
from typing import Any, cast

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
_SCALE = 10.0**DECIMALS


class StaticEmbedder:
    """Prompt embeddings from a static token table ``(vocab, dims)`` and the model's
    ``tokenizers.Tokenizer`` (for words the vocabulary does not hold whole)."""

    def __init__(self, table: Array, tokenizer: Any) -> None:
        vocab = tokenizer.get_vocab(with_added_tokens=False)
        if table.ndim != 2 or table.shape[0] < len(vocab):
            raise ValueError(f"table: shape {table.shape} does not cover {len(vocab)} tokens")
        self.dims = int(table.shape[1])
        self._table: Array = np.array(table, dtype=np.float32)
        self._tokenizer = tokenizer
        # A whole ASCII word of the vocabulary is its own single token (WordPiece matches the
        # longest prefix first); non-ASCII ones may be normalised (accents stripped) first.
        self._token_of: dict[str, int] = {
            token: index
            for token, index in vocab.items()
            if token.isascii() and token.isalnum() and token == token.lower()
        }
        # Every word seen gets a row here, in the order first seen: the words a stream uses
        # most sit together at the start rather than spread over the whole table. np.zeros
        # maps fresh pages: the rows not yet written take no memory.
        self._rows = np.zeros((len(self._table) + MAX_CACHED_WORDS, self.dims), dtype=np.float32)
        self._row_of: dict[str, int] = {}
        self._next_row = 0
        self._novel = 0
        self._adding = threading.Lock()
        self.zero: tuple[float, ...] = (0.0,) * self.dims

    @property
    def table(self) -> Array:
        """The distilled token table ``(vocab, dims)``."""
        return self._table

    def token_ids(self, word: str) -> tuple[int, ...]:
        """The WordPiece ids of one word, as the model's tokenizer splits it. A lower-case
        ASCII word of letters and digits needs no normalising or pre-splitting, so it goes to
        the WordPiece model directly (a third of the whole pipeline's cost)."""
        if word.isascii() and word.isalnum() and word.islower():
            return tuple(token.id for token in self._tokenizer.model.tokenize(word))
        return tuple(self._tokenizer.encode(word, add_special_tokens=False).ids)

    def _first_seen(self, word: str) -> tuple[int | None, Array]:
        """A row for a word seen for the first time (None when it gets none), and its sum:
        its token's row if the vocabulary holds it whole, else the sum of its pieces' rows
        (such a novel word gets a row only if short and if fewer than MAX_CACHED_WORDS have
        one)."""
        token = self._token_of.get(word)
        novel = token is None
        total: Array = (
            self._table[list(self.token_ids(word))].sum(axis=0) if novel else self._table[token]
        )
        if novel and len(word) > MAX_CACHED_CHARS:
            return None, total
        with self._adding:
            row = self._row_of.get(word)
            if row is None and not (novel and self._novel >= MAX_CACHED_WORDS):
                row = self._next_row
                self._rows[row] = total  # written before the word is published
                self._row_of[word] = row
                self._next_row += 1
                self._novel += novel
        return row, total

    def _total(self, words: Sequence[str]) -> Array:
        """The float32 sum of the words' rows, in the words' order (a word seen for the first
        time gets its row first, or its pieces are added after the others')."""
        found = list(map(self._row_of.get, words))
        extra: Array | None = None
        if None in found:
            for index, row in enumerate(found):
                if row is None:
                    found[index], total = self._first_seen(words[index])
                    if found[index] is None:
                        extra = total if extra is None else extra + total
        rows = [row for row in found if row is not None] if None in found else found
        # take + add.reduce: what rows[indices].sum(axis=0) computes, with fewer calls.
        summed: Array = np.add.reduce(self._rows.take(cast(list[int], rows), 0), 0)
        if extra is not None:
            summed += extra
        return summed

    def vector(self, words: Sequence[str]) -> Array:
        """The normalised sum of the words' rows (zeros when there are none), in float32."""
        total = self._total(words)
        norm = float(np.sqrt(total @ total))
        out: Array = total / norm if norm > 0 else total
        return out

    def embed_words(self, words: Sequence[str], components: int | None = None) -> tuple[float, ...]:
        """The first ``components`` (all by default) of :meth:`vector`, rounded to
        :data:`DECIMALS` as numpy rounds (``rint(x * 10**DECIMALS) / 10**DECIMALS``), as
        plain floats for the features."""
        count = self.dims if components is None else components
        if not words:
            return self.zero[:count]
        return _rounded(self.unit_head(words, count))

    def unit_head(self, words: Sequence[str], count: int) -> list[float]:
        """The first ``count`` components of :meth:`vector`, unrounded: the same float32
        values, as Python floats. The norm's square root is taken in double precision and
        rounded to float32 (a double holds more than twice float32's precision, so the second
        rounding never changes the first's: the float32 square root), and the head is
        divided by it in float32 (a float32 array by a Python float is float32 arithmetic),
        so the result is the float32 expression's without a numpy call per step."""
        total = self._total(words)
        # math.sqrt of the float32 dot product (the method: fewer steps than @, the same sdot)
        norm = array("f", (math.sqrt(total.dot(total)),))[0]
        head = total[:count]
        values: list[float] = (head / norm if norm > 0 else head).tolist()
        return values

    def leading(self, components: int) -> LeadingComponents:
        """This embedder, giving only the first ``components`` of each embedding (the rest
        of a unit vector's, unnormalised again: what a policy reading that many sees)."""
        if not 0 < components <= self.dims:
            raise ValueError(f"components must be in 1..{self.dims}, got {components}")
        return LeadingComponents(self, components)


class LeadingComponents:
    """A :class:`StaticEmbedder` that gives the first ``components`` of each embedding: the
    features hold, and the log stores, only what the policies read."""

    def __init__(self, embedder: StaticEmbedder, components: int) -> None:
        self.embedder = embedder
        self.components = components

    def embed_words(self, words: Sequence[str]) -> tuple[float, ...]:
        """The first ``components`` of the embedder's embedding of ``words``."""
        return self.embedder.embed_words(words, self.components)


def _rounded(values: Iterable[float]) -> tuple[float, ...]:
    """``np.round(values, DECIMALS)`` (which is ``rint(x * 10**DECIMALS) / 10**DECIMALS``,
    ``rint`` rounding halves to even as ``round`` does), a zero keeping its sign."""
    return tuple([round(x * _SCALE) / _SCALE or math.copysign(0.0, x) for x in values])
