"""National identity numbers: US Social Security, UK National Insurance, Spanish DNI/NIE."""

from __future__ import annotations

import re
from collections.abc import Iterator

from banditroute.privacy.findings import NATIONAL_ID
from banditroute.privacy.index import Detector, Span, Text, in_regions

_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


_SSN = re.compile(
    r"[0-8](?<![\w./-][0-8])(?<![0-9] [0-8])[0-9]{2}([ -]?)(?!00)[0-9]{2}\1(?!0000)[0-9]{4}"
    r"(?![\w-]|[ .][0-9])"
)
_SSN_CONTEXT = re.compile(r"(?i)(?:social[ -]?security|\bssn\b|\bss#)")
_SSN_CONTEXT_REACH = 40
"""How far before an undashed number the words that make it an SSN are looked for."""


def _us_ssns(where: Text) -> Iterator[Span]:
    """US Social Security numbers: ``###-##-####``, or undashed (``078051120``,
    ``078 05 1120``) within :data:`_SSN_CONTEXT_REACH` characters after "social security",
    "SSN" or "SS#".

    Guard: a bare 9-digit number is too common to flag without those words; area 000, 666
    and 900-999, group 00 and serial 0000 are never issued and are not findings; the number
    must stand alone (not inside a longer digit or dashed run or a decimal).
    """
    text = where.text
    for match in in_regions(_SSN, where, 9):
        if match.group()[:3] in ("000", "666"):
            continue
        if match.group(1) != "-":
            start = match.start()
            if not _SSN_CONTEXT.search(text, max(0, start - _SSN_CONTEXT_REACH), start):
                continue
        yield match.span()


_NINO = re.compile(
    r"[A-CEGHJ-PR-TW-Z](?<![A-Za-z0-9.][A-Z])[A-CEGHJ-NPR-TW-Z]"
    r" ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D](?![A-Za-z0-9])"
)
_NINO_NEVER_ISSUED = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def _uk_ninos(where: Text) -> Iterator[Span]:
    """UK National Insurance numbers: two letters, six digits (optionally in pairs) and a
    suffix A-D, e.g. ``AB 12 34 56 C``.

    Guard: upper case only; the prefix letters follow HMRC's rules (neither letter D, F, I,
    Q, U or V, second letter not O, prefixes BG, GB, KN, NK, NT, TN, ZZ never issued), so the
    HMRC specimen ``QQ 12 34 56 C`` is not a finding.
    """
    for match in in_regions(_NINO, where, 6, upper=True):
        if match.group()[:2] not in _NINO_NEVER_ISSUED:
            yield match.span()


_DNI = re.compile(r"([XYZ0-9])(?<![\w./-][XYZ0-9])([0-9]{6,7})-?([A-Z])(?![\w-])")


def _spanish_ids(where: Text) -> Iterator[Span]:
    """Spanish DNI (``12345678Z``) and NIE (``X1234567L``) numbers, the letter optionally
    after a dash.

    Guard: the control letter must match (the number mod 23, an NIE's X, Y, Z read as 0, 1,
    2), which a random letter does 1 time in 23; a DNI has 8 digits, an NIE 7 after its
    letter; upper case only.
    """
    for match in in_regions(_DNI, where, 7, upper=True):
        first, rest, letter = match.groups()
        if first in "XYZ":
            if len(rest) != 7:
                continue
            number = int(str("XYZ".index(first)) + rest)
        elif len(rest) == 7:
            number = int(first + rest)
        else:
            continue
        if _DNI_LETTERS[number % 23] == letter:
            yield match.span()


DETECTORS: tuple[tuple[str, str, Detector], ...] = (
    (NATIONAL_ID, "us_ssn", _us_ssns),
    (NATIONAL_ID, "uk_nino", _uk_ninos),
    (NATIONAL_ID, "es_dni", _spanish_ids),
)
"""The national id detectors."""
