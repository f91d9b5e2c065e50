r"""Text as the detectors see it: NFKC-normalised, invisible format characters removed.

Look-alike and invisible characters hide personal data from patterns written for ASCII: a
full-width at sign (``jane\uff20example.org``), full-width digits, or a zero-width space inside an
address (``jane\u200b@example.org``). :func:`normalise` folds compatibility characters with
NFKC and drops format characters (Unicode category Cf: zero-width spaces and joiners, the
soft hyphen, bidirectional controls, the byte-order mark), and keeps the offsets of every
change, so a finding in the normalised text is reported at its place in the original.

Work is linear and mostly free: ASCII text (nearly every prompt) is returned as is after an
O(1) check, and in other text only the runs of non-ASCII characters that are not already
normalised and printable are rebuilt: whole when normalising keeps their length (offsets map
one to one), else cluster by cluster (a base character and its combining marks), so each
change is mapped back to the characters it came from.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
import unicodedata
from dataclasses import dataclass, field

_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


@dataclass(frozen=True)
class Normalised:
    """A normalised text and where its changed pieces came from.

    ``changes`` holds ``(start, end, original_start, original_end)`` for each piece whose
    length changed (a dropped format character, ``ﬁ`` -> ``fi``, ``e`` + combining accent ->
    ``é``), in text order; between them offsets shift by a constant, so mapping an offset back
    is a binary search.
    """

    text: str
    changes: tuple[tuple[int, int, int, int], ...] = ()
    _starts: tuple[int, ...] = field(default=(), repr=False)

    def original_start(self, position: int) -> int:
        """The offset in the original text where the character at ``position`` came from."""
        i = bisect.bisect_right(self._starts, position) - 1
        if i < 0:
            return position
        _, end, original_start, original_end = self.changes[i]
        return original_start if position < end else position - end + original_end

    def original_end(self, position: int) -> int:
        """The offset in the original text just after the piece that ends at ``position``
        (an exclusive end), covering the whole of a changed piece it ends inside."""
        i = bisect.bisect_left(self._starts, position) - 1
        if i < 0:
            return position
        _, end, _, original_end = self.changes[i]
        return original_end if position <= end else position - end + original_end


def _clusters(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """``text[start:end]`` cut into clusters: a character and the combining marks after it."""
    bounds = [i for i in range(start, end) if not unicodedata.combining(text[i])]
    if not bounds or bounds[0] != start:
        bounds.insert(0, start)
    bounds.append(end)
    return list(itertools.pairwise(bounds))


@functools.lru_cache(maxsize=4096)
def _fold(cluster: str) -> str:
    """A cluster NFKC-normalised, format characters removed (cached: the same few characters
    recur)."""
    if not cluster.isprintable():
        cluster = "".join(ch for ch in cluster if unicodedata.category(ch) != "Cf")
    return unicodedata.normalize("NFKC", cluster)


def _one_to_one(text: str, folded: str) -> bool:
    """Whether NFKC turned each character of ``text`` (without format characters) into exactly
    one: decomposition never shortens a character and composition only shortens, so equal
    lengths before, after decomposing and after composing mean so."""
    return len(folded) == len(text) == len(unicodedata.normalize("NFKD", text))


@functools.cache
def _format_characters() -> re.Pattern[str]:
    """A pattern matching any format character (category Cf), built on first use (listing them
    reads about 135k code points: the BMP, plane 1 and plane 14, where all of them are)."""
    planes = itertools.chain(range(0x10000), range(0x10000, 0x20000), range(0xE0000, 0xE1000))
    ranges: list[list[int]] = []
    for code in planes:
        if unicodedata.category(chr(code)) == "Cf":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in ranges) + "]")


def _has_format_characters(text: str) -> bool:
    """Whether ``text`` holds a format character. Format characters are not printable, and
    in most text the only unprintable characters are line breaks and tabs, so a text that is
    printable without them (a check in C) is answered without the slower pattern search."""
    if text.replace("\n", " ").replace("\t", " ").replace("\r", " ").isprintable():
        return False
    return _format_characters().search(text) is not None


def normalise(text: str) -> Normalised:
    """``text`` NFKC-normalised without format characters, with the offsets of its changes."""
    if text.isascii():
        return Normalised(text)
    if not _has_format_characters(text):
        if unicodedata.is_normalized("NFKC", text):
            return Normalised(text)
        folded = unicodedata.normalize("NFKC", text)
        # Full-width letters and digits, for example: offsets map one to one.
        if _one_to_one(text, folded):
            return Normalised(folded)
    pieces: list[str] = []
    changes: list[tuple[int, int, int, int]] = []
    copied = 0  # text[:copied] is in pieces
    shift = 0  # length of the normalised text minus the original's, so far
    for match in _NON_ASCII.finditer(text):
        start, end = match.span()
        if start > 0 and unicodedata.combining(text[start]):
            start -= 1  # a combining mark composes with the ASCII character before it
        run = text[start:end]
        if run.isprintable() and unicodedata.is_normalized("NFKC", run):
            continue
        folded = _fold(run)
        # A single character is one piece, and so is a run whose characters each became one
        # (see above); only other runs are rebuilt cluster by cluster.
        whole = end - start == 1 or _one_to_one(run, folded)
        for lo, hi in [(start, end)] if whole else _clusters(text, start, end):
            piece = folded if whole else _fold(text[lo:hi])
            if piece == text[lo:hi]:
                continue
            pieces.append(text[copied:lo])
            pieces.append(piece)
            copied = hi
            if len(piece) != hi - lo:
                changes.append((lo + shift, lo + shift + len(piece), lo, hi))
                shift += len(piece) - (hi - lo)
    if not pieces:
        return Normalised(text)
    pieces.append(text[copied:])
    return Normalised("".join(pieces), tuple(changes), tuple(c[0] for c in changes))
