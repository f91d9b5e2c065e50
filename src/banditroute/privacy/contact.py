"""Contact data: e-mail addresses and phone numbers (international, North American,
national trunk-prefixed and French-style)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import phonenumbers

from banditroute.privacy.findings import EMAIL, PHONE
from banditroute.privacy.index import Detector, Span, Text, in_regions

_LOCAL_PART = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")


def _in_local_part(char: str) -> bool:
    """Whether ``char`` may be in an e-mail local part: the ASCII set, or a letter or digit
    of another script."""
    return char in _LOCAL_PART or (not char.isascii() and char.isalnum())


# Letters and digits of any script ([^\W_]): internationalised addresses (RFC 6531) carry
# non-ASCII local parts and domain labels (josé@mail.com, jean@société.fr, 用户@例子.中国).
_EMAIL_DOMAIN = re.compile(
    r"(?:[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?\.){1,8}[^\W\d_]{2,24}(?![^\W_]|-)"
)
_NOT_PERSONAL_LOCAL = frozenset({"git"})
_IMAGE_DENSITY = re.compile(r"[1-4]x\.")


_URL_USER = re.compile(r"://[^\s:/@]{0,128}:\Z")


def _url_userinfo(text: str, start: int) -> bool:
    """Whether the text just before ``start`` opens a URL's credentials (``//``, ``//user:``
    or ``//:``), so what follows up to ``@`` is a user name or password, not a mailbox."""
    if text[max(0, start - 2) : start] == "//":
        return True
    return text[start - 1 : start] == ":" and bool(
        _URL_USER.search(text, max(0, start - 132), start)
    )


def _emails(where: Text) -> Iterator[Span]:
    """E-mail addresses: a local part of up to 64 characters, ``@``, a dotted domain ending in
    a letters-only TLD (letters and digits of any script: internationalised addresses).
    Found from each ``@`` (local part read backwards, domain forwards).

    Guard: a dot in the domain and an alphabetic TLD (``user@localhost``, ``lodash@4.17.21``
    are not findings); no image-density names (``icon@2x.png``); no SSH remotes
    (``git@github.com``); not the credentials of a URL (``https://user@host``,
    ``https://user:pw@host``, left to :func:`_url_credentials`); the local part must not
    start or end with a dot.
    """
    text = where.text
    at = text.find("@")
    while at != -1:
        start = at
        while start > 0 and at - start <= 64 and _in_local_part(text[start - 1]):
            start -= 1
        local = text[start:at]
        domain = _EMAIL_DOMAIN.match(text, at + 1)
        if (
            domain is not None
            and 0 < len(local) <= 64
            and not local.startswith(".")
            and not local.endswith(".")
            and local not in _NOT_PERSONAL_LOCAL
            and not _IMAGE_DENSITY.match(domain.group())
            and not _url_userinfo(text, start)
        ):
            yield start, domain.end()
            at = text.find("@", domain.end())
        else:
            at = text.find("@", at + 1)


def _possible_international(digits: str) -> bool:
    """Whether ``+digits`` is a possible phone number: an assigned country code and a length
    that country's numbers have (libphonenumber's metadata, through ``phonenumbers``), and
    for +1 a North American area code (it starts 2-9)."""
    if digits[0] == "1" and (len(digits) < 2 or digits[1] not in "23456789"):
        return False
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return False  # no such country code
    return bool(phonenumbers.is_possible_number(number))


_E164 = re.compile(r"\+(?<![\w+]\+)[1-9][0-9 ().-]{6,24}[0-9](?!\w)")
_PHONE_PARENS = re.compile(r"\(([0-9]{1,4})\)")
_DOUBLE_SEPARATOR = re.compile(r"[ .-]{2}")
_SIGNED_DATE = re.compile(r"[0-9]{4}-[01][0-9]-[0-3][0-9]")


def _e164_phones(where: Text) -> Iterator[Span]:
    """International phone numbers: ``+``, country code and subscriber number, 8 to 15 digits
    in all, with single spaces, dashes, dots and one parenthesised group allowed
    (``+44 20 7946 0958``, ``+1 (555) 123-4567``).

    Guard: the ``+`` must be followed directly by a digit 1-9 and not follow a letter, digit
    or ``+`` (so ``3 + 4 = 7`` and ``x+12`` are not findings); a possible number of an
    assigned country code (:func:`_possible_international`: ``+2147483647`` and
    ``+4294967296``, signed integers, and ``+33 123 4567``, too short for France, are not);
    no doubled separators; not a signed decimal (``+35236450.6``) or date (``+1980-02-29``);
    the number must not run on into more digits.
    """
    text = where.text
    for match in in_regions(_E164, where, 8, sign="+"):
        end = match.end()
        if end < len(text) - 1 and text[end] in " .-" and text[end + 1].isdigit():
            continue
        raw = _PHONE_PARENS.sub(r"\1", match.group()[1:], count=1)
        if "(" in raw or ")" in raw or _DOUBLE_SEPARATOR.search(raw):
            continue
        if raw.count(".") == 1 and not any(sep in raw for sep in " -"):
            continue  # a signed decimal such as +35236450.6
        if _SIGNED_DATE.match(raw):
            continue  # a signed ISO date such as +1980-02-29
        digits = "".join(ch for ch in raw if ch.isdigit())
        if 8 <= len(digits) <= 15 and _possible_international(digits):
            yield match.span()


_NANP_PLAIN = re.compile(
    r"[1-9](?<![\w+/][1-9])(?<![02-9] [1-9])(?<![^1][.-][1-9])(?:(?<=1)[ .-](?=[2-9])[0-9]"
    r"|(?<=[2-9]))[0-9]{2}([.-])[0-9]{3}\1[0-9]{4}(?![\w/-]|[ .][0-9])"
)
_NANP_PARENS = re.compile(
    r"[1(](?<![\w+/.-][1(])(?<![02-9] [1(])(?:(?<=1) ?\(|(?<=\())[2-9][0-9]{2}\) ?[0-9]{3}"
    r"[ .-][0-9]{4}(?![\w/-]|[ .][0-9])"
)


def _nanp_phones(where: Text) -> Iterator[Span]:
    """North American numbers: ``(555) 123-4567``, ``555-123-4567``, ``555.123.4567``, with
    an optional leading ``1-``/``1 ``.

    Guard: the area code starts 2-9; the bare form needs one consistent separator (``-`` or
    ``.``; spaces alone are too common between plain numbers); the number must stand alone
    (not inside a longer digit run, path, version string or decimal).
    """
    spans = [m.span() for m in in_regions(_NANP_PLAIN, where, 10)]
    spans += [m.span() for m in in_regions(_NANP_PARENS, where, 10, sign="(")]
    yield from sorted(spans)


_TRUNK = re.compile(
    r"0(?<![\w+./-]0)(?<![0-9] 0)[0-9]{2,4}(?:[ -][0-9]{3,8}){1,2}(?![\w/-]|[ .][0-9])"
)


def _trunk_phones(where: Text) -> Iterator[Span]:
    """National numbers with a trunk prefix 0, in groups: ``020 7946 0958`` (UK),
    ``07700 900123``, ``030 12345678`` (Germany), 10 or 11 digits in all.

    Guard: the leading 0 and at least one space or dash (a bare digit run is not a phone);
    10-11 digits; not all one digit; not inside a longer digit run.
    """
    for match in in_regions(_TRUNK, where, 10, sign="0"):
        digits = match.group().replace(" ", "").replace("-", "")
        if 10 <= len(digits) <= 11 and len(set(digits)) > 1:
            yield match.span()


_FRENCH = re.compile(
    r"0(?<![\w+./-]0)(?<![0-9] 0)[1-9]([ .])[0-9]{2}\1[0-9]{2}\1[0-9]{2}\1[0-9]{2}"
    r"(?![\w/-]|[ .][0-9])"
)


def _french_phones(where: Text) -> Iterator[Span]:
    """French-style numbers in pairs: ``06 12 34 56 78``, ``01.23.45.67.89``.

    Guard: trunk 0 then 1-9, five pairs with one consistent separator, standing alone, and
    not a counting sequence (``<Buffer 01 02 03 04 05>`` in a byte dump).
    """
    for match in in_regions(_FRENCH, where, 10, sign="0"):
        pairs = [int(match.group()[i : i + 2]) for i in range(0, 15, 3)]
        if any(b - a != 1 for a, b in itertools.pairwise(pairs)):
            yield match.span()


DETECTORS: tuple[tuple[str, str, Detector], ...] = (
    (EMAIL, "email", _emails),
    (PHONE, "phone_e164", _e164_phones),
    (PHONE, "phone_nanp", _nanp_phones),
    (PHONE, "phone_national", _trunk_phones),
    (PHONE, "phone_fr", _french_phones),
)
"""E-mail before phones (a phone-like run in an address is part of the address)."""
