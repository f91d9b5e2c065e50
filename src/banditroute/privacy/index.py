"""The scanned window mapped once to byte classes, so detectors search only where worth it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Span = tuple[int, int]
Detector = Callable[["Text"], Iterator[Span]]
"""A detector: the spans of its kind of value in a scanned window, in text order."""


def _table(classes: dict[str, bytes], default: bytes) -> bytes:
    """A ``bytes.translate`` table sending each character of each key to its byte."""
    table = bytearray(default * 256)
    for chars, byte in classes.items():
        for ch in chars:
            table[ord(ch)] = byte[0]
    return bytes(table)


_DIGITS = "0123456789"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NUMBER_MAP = _table({_DIGITS: b"0", " ().-": b"1", _UPPER: b"A"}, b" ")
"""Digits to ``0``, number separators to ``1``, upper-case letters to ``A``, all else blank."""
_NUMBER_RUN = re.compile(rb"0(?<!00)[01]{5,}")
_OPERATOR_MAP = _table(
    {":=": b":", ">": b">", " \t": b" ", "\"'`": b'"', "\n\r\f\v,;()[]{}<": b"|"}, b"v"
)
"""``:``/``=`` to ``:``, blanks to space, quotes to ``"``, characters that end a value to
``|``, value characters to ``v``."""
_OPERATOR = re.compile(rb':[:>]?[ ]{0,4}"?[v:]{16}')
_REACH = 3
"""How far outside a run of digits a numeric finding may reach (``AB 12 34 56 C``,
``+44 ...``, ``12345678-Z``): the letters, signs and suffixes of the formats detected."""


@dataclass(frozen=True)
class Text:
    """The scanned window and the places worth a detector's time, found in one cheap pass.

    Character-class regexes cost about 10 ns a character in CPython while a literal prefix is
    found at memchr speed, so the window is mapped once to a few byte classes (one byte per
    character: non-ASCII characters become ``?``) and searched there with literal patterns:

    - ``numbers``: the window with digits as ``0``, number separators as ``1``, upper-case
      letters as ``A``, anything else blank.
    - ``regions``: runs of digits and number separators (``space ( ) . -``) holding six or
      more digits, widened by :data:`_REACH` each side and merged, with the most digits of a
      run inside. Every numeric format detected (cards, SSNs, NINOs, DNIs, phones) lies in
      one, so those detectors run only there.
    - ``iban_starts``: two upper-case letters then two digits, where an IBAN may begin.
    - ``operators``: ``:``/``=`` followed by 16 value characters, where a
      ``name = secret`` assignment may be.
    """

    text: str
    numbers: bytes
    regions: tuple[tuple[int, int, int], ...]
    iban_starts: tuple[int, ...]
    operators: tuple[int, ...]


def index_text(text: str) -> Text:
    """Map ``text`` to byte classes and find its digit regions, IBAN starts and operators."""
    raw = text.encode("ascii", "replace")
    numbers = raw.translate(_NUMBER_MAP)
    regions: list[tuple[int, int, int]] = []
    n = len(text)
    for match in _NUMBER_RUN.finditer(numbers):
        start, end = match.span()
        digits = numbers.count(b"0", start, end)
        if digits < 6:
            continue
        lo, hi = max(0, start - _REACH), min(n, end + _REACH)
        if regions and lo <= regions[-1][1]:
            previous = regions[-1]
            regions[-1] = (previous[0], hi, max(previous[2], digits))
        else:
            regions.append((lo, hi, digits))
    iban_starts: list[int] = []
    at = numbers.find(b"AA00")
    while at != -1:
        iban_starts.append(at)
        at = numbers.find(b"AA00", at + 1)
    operators: list[int] = []
    if ":" in text or "=" in text:
        operators = [m.start() for m in _OPERATOR.finditer(raw.translate(_OPERATOR_MAP))]
    return Text(text, numbers, tuple(regions), tuple(iban_starts), tuple(operators))


def in_regions(
    pattern: re.Pattern[str], where: Text, min_digits: int, *, sign: str = "", upper: bool = False
) -> Iterator[re.Match[str]]:
    """Matches of ``pattern`` in the digit regions with a run of ``min_digits`` digits that
    contain ``sign`` (when given) and an upper-case letter (when ``upper``)."""
    for lo, hi, digits in where.regions:
        if digits < min_digits:
            continue
        if sign and where.text.find(sign, lo, hi) == -1:
            continue
        if upper and where.numbers.find(b"A", lo, hi) == -1:
            continue
        yield from pattern.finditer(where.text, lo, hi)
