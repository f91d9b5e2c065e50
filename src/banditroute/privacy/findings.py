"""Kinds of finding, data classes, :class:`Finding` and the data class findings imply."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

EMAIL = "email"
PHONE = "phone"
CARD = "card"
IBAN = "iban"
NATIONAL_ID = "national_id"
SECRET = "secret"
KINDS: tuple[str, ...] = (EMAIL, PHONE, CARD, IBAN, NATIONAL_ID, SECRET)
"""The kinds of :class:`Finding`: five kinds of personal data, then secrets."""

PERSONAL_KINDS = frozenset({EMAIL, PHONE, CARD, IBAN, NATIONAL_ID})
"""Kinds that are personal data (they make a prompt ``"pii"``)."""

DATA_CLASSES: tuple[str, ...] = ("public", "internal", "pii", "secret")
"""Data classes from least to most sensitive. ``"internal"`` is never detected; a client
declares it (company-confidential text that holds no personal data or secret)."""


@dataclass(frozen=True)
class Finding:
    """One piece of personal data or one secret found in a text.

    ``start``/``end`` are character offsets into the scanned text (``text[start:end]`` is the
    value); ``preview`` shows at most the first and last two characters, so a finding can be
    logged or shown without leaking the value; ``detector`` names the rule that fired.
    """

    kind: str
    start: int
    end: int
    preview: str
    detector: str = ""


def redact(value: str) -> str:
    """A preview of ``value`` that never contains it: ``"41***11"`` for a card number.

    Values of 8 or more characters keep their first and last two characters, shorter ones
    (4-7) their first and last, and anything shorter shows nothing, so at most half of a
    value is ever shown.
    """
    if len(value) >= 8:
        return f"{value[:2]}***{value[-2:]}"
    if len(value) >= 4:
        return f"{value[:1]}***{value[-1:]}"
    return "***"


def classify(findings: Iterable[Finding]) -> str:
    """The data class that findings imply: ``"secret"`` if any secret, else ``"pii"`` if any
    personal data, else ``"public"``."""
    kinds = {finding.kind for finding in findings}
    if SECRET in kinds:
        return "secret"
    if kinds & PERSONAL_KINDS:
        return "pii"
    return "public"


def sensitivity(data_class: str) -> int:
    """Rank of a data class in :data:`DATA_CLASSES` (0 = public); unknown names raise."""
    try:
        return DATA_CLASSES.index(data_class)
    except ValueError:
        raise ValueError(
            f"unknown data class {data_class!r}; expected one of {', '.join(DATA_CLASSES)}"
        ) from None


def most_sensitive(a: str, b: str) -> str:
    """The more sensitive of two data classes, e.g. a client-declared and a detected one."""
    return a if sensitivity(a) >= sensitivity(b) else b
