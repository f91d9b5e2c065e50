"""Financial personal data: payment card numbers (Luhn) and IBANs (ISO 13616 mod-97)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from banditroute.privacy.findings import CARD, IBAN
from banditroute.privacy.index import Detector, Span, Text, in_regions


def luhn_valid(digits: str) -> bool:
    """Whether a string of ASCII digits passes the Luhn (mod 10) check of card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    """Whether an IBAN without spaces has a known country, that country's length and passes
    the ISO 13616 mod-97 check (the number read with letters as 10..35 leaves remainder 1)."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    remainder = 0
    for ch in compact[4:] + compact[:4]:
        if "0" <= ch <= "9":
            remainder = (remainder * 10 + ord(ch) - 48) % 97
        elif "A" <= ch <= "Z":
            remainder = (remainder * 100 + ord(ch) - 55) % 97
        else:
            return False
    return remainder == 1


IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip
"""IBAN length by country code (the SWIFT IBAN registry). Only these countries are detected:
the length check removes most chance mod-97 matches among ordinary upper-case codes."""


_IBAN = re.compile(
    r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
    r"(?![A-Za-z0-9])"
)


def _ibans(where: Text) -> Iterator[Span]:
    """IBANs: country code, two check digits and the account number, written compact
    (``GB82WEST12345698765432``) or in groups of four (``GB82 WEST 1234 5698 7654 32``).

    Guard: the country must be in :data:`IBAN_LENGTHS` with that exact length and the ISO
    13616 mod-97 check must pass (a wrong check digit is not a finding). Upper case only.
    When the groups run on into following upper-case text, the IBAN is cut at the country's
    length if that falls on a group boundary.
    """
    text = where.text
    for start in where.iban_starts:
        expected = IBAN_LENGTHS.get(text[start : start + 2])
        match = _IBAN.match(text, start) if expected else None
        if match is None or expected is None:
            continue
        raw = match.group()
        # Walk to the end of the country's length, then require a group boundary there.
        count, cut = 0, len(raw)
        for i, ch in enumerate(raw):
            if ch != " ":
                count += 1
                if count == expected:
                    cut = i + 1
                    break
        if count != expected or (cut < len(raw) and raw[cut] != " "):
            continue
        if iban_valid(raw[:cut].replace(" ", "")):
            yield start, start + cut


_CARD = re.compile(
    r"[2-6](?<![\w./*^][2-6])(?<![0-9][ -][2-6])[0-9](?:[ -]?[0-9]){11,17}"
    r"(?![ -]?[0-9])(?!\w|\.[0-9]| ?[*/^])"
)


def _cards(where: Text) -> Iterator[Span]:
    """Payment card numbers: 13 to 19 digits starting 2-6 (Mastercard, Visa, Amex, Discover,
    JCB, UnionPay, Maestro), compact or grouped with spaces or dashes.

    Guard: the Luhn check must pass (a random number fails 9 times in 10); the length must
    fit the issuer range (:func:`_card_shape`: ``20170809091249``, a timestamp, is not a
    2-series Mastercard); 17-19 digits only when grouped (an unseparated run that long is
    far more often a 64-bit seed or id); one kind of separator only; not all one digit; not
    part of a longer digit run, a decimal, a URL path or a product or quotient
    (``35184372088832*sqrt(x)``); leading 0, 1, 7, 8, 9 (timestamps, order numbers) are not
    cards.
    """
    for match in in_regions(_CARD, where, 13):
        raw = match.group()
        if " " in raw and "-" in raw:
            continue
        digits = raw.replace(" ", "").replace("-", "")
        if len(digits) == len(raw) and len(digits) > 16:
            continue  # an unseparated 17-19 digit run: a 64-bit id or seed far more often
        if _card_shape(digits) and len(set(digits)) > 1 and luhn_valid(digits):
            yield match.span()


def _card_shape(digits: str) -> bool:
    """Whether a 13-19 digit number starts with an issuer's prefix and has a length that
    issuer uses: Amex 34/37 (15), Mastercard 51-55 and 2221-2720 (16), Diners/JCB 30, 35,
    36, 38, 39 (14-19), Visa 4 (13, 16, 19), Maestro 50, 56-58 (any), Discover/UnionPay/
    Maestro 60-65, 67 (16-19). Prefixes 31-33, 59, 66, 68, 69 are no card's."""
    n, prefix = len(digits), int(digits[:2])
    if prefix in (34, 37):  # American Express
        return n == 15
    if 51 <= prefix <= 55 or 22 <= prefix <= 27:  # Mastercard
        return n == 16 and (prefix >= 51 or 2221 <= int(digits[:4]) <= 2720)
    if prefix in (30, 35, 36, 38, 39):  # Diners Club, JCB
        return n >= 14
    if 40 <= prefix <= 49:  # Visa
        return n in (13, 16, 19)
    if prefix == 50 or 56 <= prefix <= 58:  # Maestro
        return True
    return (60 <= prefix <= 65 or prefix == 67) and n >= 16  # Discover, UnionPay, Maestro


DETECTORS: tuple[tuple[str, str, Detector], ...] = ((IBAN, "iban", _ibans), (CARD, "card", _cards))
"""IBANs before cards: a card-like run inside an IBAN is the IBAN."""
