"""Personal data and secrets in prompt text: what a prompt holds decides where it may go.

:func:`scan` finds e-mail addresses, phone numbers, payment cards, IBANs, national ids and
secrets (private keys, cloud and API tokens, high-entropy passwords) and reports each as a
:class:`Finding` with its character offsets and a redacted preview, never the value itself,
so findings can be logged. :func:`classify` turns the findings into a data class
(``"public"``, ``"pii"`` or ``"secret"``), and :func:`most_sensitive` combines it with the
class a client declared: the router sends a request only to models tagged for its class and
never explores on sensitive requests.

Detection is tuned for precision at a usable recall: every detector has a false-positive
guard (a checksum where the format has one: Luhn for cards, ISO 13616 mod-97 for IBANs, the
control letter of Spanish DNI/NIE numbers; otherwise structural rules or an entropy
threshold), because a false positive confines a request to fewer models and stops learning
on it.

Work is bounded: :func:`scan` reads at most ``max_chars`` characters from the start of the
text (anything after is not seen; a caller that must be sure can treat longer prompts as
sensitive), and every pattern has bounded repetitions and only one way to match a given span
(no nested quantifiers, so no catastrophic backtracking): a hostile megabyte scans in well
under a second. Work is also small: CPython regexes that start with a character class cost
about 10 ns a character, so the text is mapped once to byte classes where digit runs, IBAN
starts and ``=``/``:`` operators are found with literal searches (see :class:`_Text`), the
numeric detectors run only inside those digit runs, and the secret patterns start with
their literal prefix (``AKIA``, ``eyJ``, ``sk-``...). A 2 KB prompt costs about 40 us.
The module is pure and uses only the standard library.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
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

DEFAULT_MAX_CHARS = 200_000
"""How many characters :func:`scan` reads by default (about 50k tokens: most prompts whole)."""

ENTROPY_THRESHOLD = 3.0
"""Bits per character a password-like value needs to count as a secret.

Random 16-character values over letters and digits measure about 3.6-4.0 bits per character;
words, repeated words and keyboard runs measure less (``"hunter2hunter2hunter2"``: 2.8,
``"passwordpassword"``: 2.75). Below 16 characters entropy says too little, so short values
are not judged at all (``password = hunter2`` is not a finding)."""

MIN_SECRET_VALUE = 16
"""Shortest value of a ``password = ...`` style assignment that can count as a secret."""

_PEM_SPAN = 16_384
"""How far after a ``BEGIN ... PRIVATE KEY`` header the matching ``END`` line is looked for
(a 4096-bit RSA key in PEM is about 3.3k characters)."""


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


def shannon_entropy(value: str) -> float:
    """Shannon entropy of the characters of ``value``, in bits per character (0 when empty)."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


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

_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"

Span = tuple[int, int]


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
class _Text:
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


def _index(text: str) -> _Text:
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
    return _Text(text, numbers, tuple(regions), tuple(iban_starts), tuple(operators))


def _in_regions(
    pattern: re.Pattern[str], where: _Text, min_digits: int, *, sign: str = "", upper: bool = False
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


# --------------------------------------------------------------------------------------------
# Secrets. Each pattern starts with its literal prefix (a fast substring search) and checks
# the character before it with a lookbehind.
# --------------------------------------------------------------------------------------------

_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_NEWLINE = r"(?:\r?\n|(?:\\r)?\\n)"  # a line break, or its escape in JSON and .env text
_PEM_BODY = re.compile(
    rf"[ \t]*{_NEWLINE}(?:[ \t]*(?:Proc-Type|DEK-Info|Comment|Version):[^\r\n\\]{{0,200}}"
    rf"{_NEWLINE})*(?:[ \t]*{_NEWLINE}){{0,4}}[ \t]*[A-Za-z0-9+/=]{{16,4096}}"
)


def _pem_private_keys(where: _Text) -> Iterator[Span]:
    """PEM private keys: a ``-----BEGIN ... PRIVATE KEY-----`` header (RSA, EC, OPENSSH,
    ENCRYPTED, PGP ``... PRIVATE KEY BLOCK``...) through its ``END`` line when that follows
    within :data:`_PEM_SPAN` characters, else through the first line of the key.

    Guard: only *private* key headers; certificates and public keys are not secrets; the
    header must be followed by key material (a line of 16 or more base64 characters after
    optional ``Proc-Type:``/``DEK-Info:`` lines; newlines may be ``\\n`` escapes, as in
    JSON and ``.env`` files), so prose that names the marker is not a finding.
    """
    text = where.text
    if "-----BEGIN " not in text:
        return
    for match in _PEM.finditer(text):
        body = _PEM_BODY.match(text, match.end())
        if body is None:
            continue
        end = _PEM_END.search(text, body.end(), match.end() + _PEM_SPAN)
        yield match.start(), end.end() if end else body.end()


_JWT = re.compile(
    r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{5,8192}\.[A-Za-z0-9_-]{5,65536}"
    r"\.[A-Za-z0-9_-]{0,8192}(?![A-Za-z0-9_-])"
)


def _jwts(where: _Text) -> Iterator[Span]:
    """JSON Web Tokens: three base64url segments joined by dots, the header starting ``eyJ``
    (base64 of ``{"``); the signature may be empty (unsigned tokens still carry claims).

    Guard: the ``eyJ`` header prefix starting a word and segments of at least 5 characters,
    so dotted names and version strings are not findings.
    """
    if "eyJ" not in where.text:
        return
    for match in _JWT.finditer(where.text):
        yield match.span()


_GITHUB = re.compile(
    r"g(?<![A-Za-z0-9_]g)(?:h[pousr]_[A-Za-z0-9]{36,251}|ithub_pat_[A-Za-z0-9_]{22,244})"
    r"(?![A-Za-z0-9_])"
)


def _github_tokens(where: _Text) -> Iterator[Span]:
    """GitHub tokens: classic ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` and 36 or more
    letters and digits, and fine-grained ``github_pat_`` tokens.

    Guard: the prefix must start a word and the body be at least 36 (22 for ``github_pat_``)
    characters, so ``ghp_token`` in prose or code is not a finding.
    """
    for match in _GITHUB.finditer(where.text):
        yield match.span()


_AWS_KEY = re.compile(r"A[KS]IA(?<![A-Za-z0-9]A[KS]IA)[A-Z0-9]{16}(?![A-Za-z0-9])")


def _aws_access_keys(where: _Text) -> Iterator[Span]:
    """AWS access key ids: ``AKIA`` (long-term) or ``ASIA`` (temporary) and 16 upper-case
    letters or digits.

    Guard: exactly 20 characters, standing alone (no letter or digit on either side).
    """
    if "AKIA" not in where.text and "ASIA" not in where.text:
        return
    for match in _AWS_KEY.finditer(where.text):
        yield match.span()


_SLACK = re.compile(r"xox(?<![A-Za-z0-9]xox)[baprs]-[A-Za-z0-9-]{10,250}(?![A-Za-z0-9-])")


def _slack_tokens(where: _Text) -> Iterator[Span]:
    """Slack tokens: ``xoxb-``, ``xoxa-``, ``xoxp-``, ``xoxr-`` or ``xoxs-`` and 10 or more
    letters, digits and dashes.

    Guard: the body must hold a digit (real tokens start with numeric team/user ids), so
    ``xoxb-your-token-here`` placeholders are not findings.
    """
    if "xox" not in where.text:
        return
    for match in _SLACK.finditer(where.text):
        if any(ch.isdigit() for ch in match.group()[5:]):
            yield match.span()


_SK_KEY = re.compile(r"sk-(?<![A-Za-z0-9_-]sk-)[A-Za-z0-9_-]{20,512}(?![A-Za-z0-9_-])")
_STRIPE_KEY = re.compile(
    r"k_(?<=[sr]k_)(?<![A-Za-z0-9_-][sr]k_)(?:live|test)_[A-Za-z0-9]{20,247}(?![A-Za-z0-9_-])"
)
"""A Stripe key from the ``k_`` of ``sk_``/``rk_`` (a literal start, found fast)."""


def _api_keys(where: _Text) -> Iterator[Span]:
    """OpenAI and Anthropic style keys: ``sk-`` (also ``sk-proj-``, ``sk-ant-api03-``...) and
    20 or more letters, digits, dashes and underscores; Stripe secret and restricted keys:
    ``sk_live_``, ``rk_live_`` (or ``_test_``) and 20 or more letters and digits.

    Guard: the prefix must start a word (not ``risk-`` or ``task-``), and the body must hold a
    letter and a digit and have the entropy of a random value (:data:`ENTROPY_THRESHOLD`), so
    slugs such as ``sk-learn-is-a-python-library`` are not findings.
    """
    text = where.text
    spans = [m.span() for m in _SK_KEY.finditer(text)] if "sk-" in text else []
    if "k_live_" in text or "k_test_" in text:
        spans += [(m.start() - 1, m.end()) for m in _STRIPE_KEY.finditer(text)]
    for start, end in sorted(spans):
        body = text[start + 3 : end]
        if (
            any(ch.isdigit() for ch in body)
            and any(ch.isalpha() for ch in body)
            and shannon_entropy(body) >= ENTROPY_THRESHOLD
        ):
            yield start, end


_GOOGLE = re.compile(r"AIza(?<![A-Za-z0-9_-]AIza)[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])")


def _google_api_keys(where: _Text) -> Iterator[Span]:
    """Google API keys: ``AIza`` and exactly 35 letters, digits, dashes or underscores.

    Guard: exactly 39 characters standing alone.
    """
    if "AIza" not in where.text:
        return
    for match in _GOOGLE.finditer(where.text):
        yield match.span()


_URL_CREDENTIALS = re.compile(r"://([^\s:/@]{0,128}):([^\s/@]{1,256})@([A-Za-z0-9.-]{0,253})")
_DOCUMENTATION_DOMAINS = ("example.com", "example.net", "example.org")
_DOCUMENTATION_SUFFIXES = (".example.com", ".example.net", ".example.org", ".example", ".test")
_PLACEHOLDER_PASSWORDS = frozenset(
    {"password", "passwd", "pass", "pwd", "secret", "changeme", "example", "yourpassword"}
)


def _url_credentials(where: _Text) -> Iterator[Span]:
    """Passwords in URLs: ``scheme://user:PASSWORD@host`` (database and broker connection
    strings; the user may be empty, as in ``redis://:PASSWORD@host``); the finding is the
    password.

    Guard: at least 4 characters, not a placeholder (``password``, ``<password>``,
    ``${DB_PASSWORD}``, ``****``...), not the user name again (``postgres:postgres@``), not
    all digits (``host:8080@`` is a port), and not on a documentation host (RFC 2606:
    ``example.com``, ``*.test``...).
    """
    if "://" not in where.text:
        return
    for match in _URL_CREDENTIALS.finditer(where.text):
        user, value, host = match.groups()
        if (
            len(value) >= 4
            and value != user
            and not value.isdigit()
            and not _placeholder(value)
            and not _documentation_host(host)
        ):
            yield match.span(2)


def _documentation_host(host: str) -> bool:
    """Whether a host name is reserved for documentation and tests (RFC 2606)."""
    host = host.lower().rstrip(".")
    return host in _DOCUMENTATION_DOMAINS or host.endswith(_DOCUMENTATION_SUFFIXES)


def _placeholder(value: str) -> bool:
    """Whether a password-like value is a stand-in rather than a value: a template variable,
    a word like ``password``, one repeated character, ``your_...``/``xxx...`` and the like."""
    lowered = value.lower().strip("_-")
    return (
        lowered in _PLACEHOLDER_PASSWORDS
        or value[0] in "$%<{["
        or len(set(lowered)) <= 1
        or lowered.startswith(("your", "my_", "xxx", "example", "placeholder", "changeme"))
    )


_SECRET_WORDS = ("key", "secret", "passw", "pwd", "token", "credential")
_ASSIGNED_VALUE = re.compile(r"[:=][=>]?[ \t]{0,4}[\"'`]?([^\s\"'`,;()\[\]{}<>]{16,512})")
_SECRET_NAME = re.compile(
    r"(?i)(?:api[_-]?key|apikey|secret|passw(?:or)?d|pwd|token|credentials?|access[_-]?key"
    r"|private[_-]?key)[A-Za-z0-9_.-]{0,30}[\"']?[ \t]{0,4}\Z"
)
_COLON_CHAIN = re.compile(r":[^\s\"'`,;(){}\[\]]*\Z")
_NAME_REACH = 48
"""How far before ``=``/``:`` the secret-looking name is looked for."""
_BEARER = re.compile(r"earer(?<=[Bb]earer)[ \t]{1,4}([A-Za-z0-9._~+/-]{16,2048}=*)")
_WORD_SEPARATORS = re.compile(r"[_.\-/:#*$@]+")
_CAMEL_CASE = re.compile(r"[A-Z]*[a-z]*(?:[A-Z][a-z]+)*")
_SNAKE_CASE = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)+|[A-Z0-9]+(?:_[A-Z0-9]+)+")
_DOTTED_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _assigned_secrets(where: _Text) -> Iterator[Span]:
    """Secret-looking values assigned to secret-looking names: ``api_key = ...``,
    ``"client_secret": "..."``, ``DB_PASSWORD=...``, ``token := ...``, ``key => ...``,
    and ``Authorization: Bearer ...``; the finding is the value.

    Guard: the name must contain api_key, secret, password/passwd/pwd, token, credential,
    access_key or private_key. The value must have at least :data:`MIN_SECRET_VALUE`
    characters and :data:`ENTROPY_THRESHOLD` bits of entropy per character, and must not be:
    words (no digit, and each piece between ``_ . - / : # * $ @`` in one case or camelCase:
    ``YOUR_API_KEY_HERE``, ``GenericTokenizer``, ``bare-quoted-string``,
    ``latest/api/token``; random mixed case such as ``qWeRtYzXaBcDvFgH`` stays a secret);
    all digits (``max_tokens = 1000000000000000``); a placeholder (``${API_KEY}``,
    ``<token>``); or code: a dotted path (``settings.SECRET_KEY``, ``base64.b64decode``), a
    one-case snake_case name (``s3_example_simple``, ``OPENAI_KEY_V2``), a name that is
    called or indexed (``make_token_v2(...)``), or an AWS resource name, as value or as name
    (``arn:aws:secretsmanager:*:*:secret:db-2*``).
    """
    text = where.text
    spans: list[Span] = []
    covered = 0
    for position in where.operators:
        if position < covered:
            continue
        match = _ASSIGNED_VALUE.match(text, position)
        if match is None:
            continue
        name = text[max(0, position - _NAME_REACH) : position]
        lowered = name.lower()
        if not any(word in lowered for word in _SECRET_WORDS) or not _SECRET_NAME.search(name):
            continue
        covered = match.end()
        if text[covered : covered + 1] in ("(", "["):
            continue  # a call or an index: code, not a value
        if text[position] == ":" and match.start(1) == position + 1 and _COLON_CHAIN.search(name):
            continue  # arn:aws:secretsmanager:...:secret:name is an identifier, not a setting
        start = match.start(1)
        value = match.group(1).rstrip(":=")  # ``if token == Token.NAME:`` ends a statement
        if _secret_value(value):
            spans.append((start, start + len(value)))
    for match in _BEARER.finditer(text):
        if _secret_value(match.group(1)):
            spans.append(match.span(1))
    yield from sorted(spans)


def _word(segment: str) -> bool:
    """Whether a piece of a value reads as a word or a name: empty, or letters in one case,
    Capitalized, camelCase or CamelCase (``HTTPServer``), not random mixed case."""
    return not segment or (
        segment.isalpha()
        and (segment.islower() or segment.isupper() or bool(_CAMEL_CASE.fullmatch(segment)))
    )


def _secret_value(value: str) -> bool:
    """Whether an assigned value looks like a real secret (see :func:`_assigned_secrets`)."""
    if len(value) < MIN_SECRET_VALUE or value.isdigit() or _placeholder(value):
        return False
    if _DOTTED_PATH.fullmatch(value) or _SNAKE_CASE.fullmatch(value):
        return False  # settings.SECRET_KEY, base64.b64decode, s3_example_simple, KEY_V2_NAME
    if not any(ch.isdigit() for ch in value) and all(
        _word(segment) for segment in _WORD_SEPARATORS.split(value)
    ):
        return False  # words, names, paths: YOUR_API_KEY_HERE, GenericTokenizer, latest/api/x
    if value.startswith("arn:"):
        return False  # an AWS resource name (arn:aws:secretsmanager:...:secret:db-2*)
    return shannon_entropy(value) >= ENTROPY_THRESHOLD


# --------------------------------------------------------------------------------------------
# Personal data. Numeric formats run only inside the digit regions of ``_Text``; where a
# pattern starts with a character class, the lookbehinds after its first character check
# what precedes it.
# --------------------------------------------------------------------------------------------

_IBAN = re.compile(
    r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
    r"(?![A-Za-z0-9])"
)


def _ibans(where: _Text) -> Iterator[Span]:
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


def _cards(where: _Text) -> Iterator[Span]:
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
    for match in _in_regions(_CARD, where, 13):
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


_SSN = re.compile(
    r"[0-8](?<![\w./-][0-8])[0-9]{2}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![\w-]|\.[0-9])"
)


def _us_ssns(where: _Text) -> Iterator[Span]:
    """US Social Security numbers written ``###-##-####``.

    Guard: the dashes are required (a bare 9-digit number is too common to flag); area 000,
    666 and 900-999, group 00 and serial 0000 are never issued and are not findings; the
    number must stand alone (not inside a longer dashed run or a decimal).
    """
    for match in _in_regions(_SSN, where, 9, sign="-"):
        if match.group()[:3] not in ("000", "666"):
            yield match.span()


_NINO = re.compile(
    r"[A-CEGHJ-PR-TW-Z](?<![A-Za-z0-9.][A-Z])[A-CEGHJ-NPR-TW-Z]"
    r" ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D](?![A-Za-z0-9])"
)
_NINO_NEVER_ISSUED = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def _uk_ninos(where: _Text) -> Iterator[Span]:
    """UK National Insurance numbers: two letters, six digits (optionally in pairs) and a
    suffix A-D, e.g. ``AB 12 34 56 C``.

    Guard: upper case only; the prefix letters follow HMRC's rules (neither letter D, F, I,
    Q, U or V, second letter not O, prefixes BG, GB, KN, NK, NT, TN, ZZ never issued), so the
    HMRC specimen ``QQ 12 34 56 C`` is not a finding.
    """
    for match in _in_regions(_NINO, where, 6, upper=True):
        if match.group()[:2] not in _NINO_NEVER_ISSUED:
            yield match.span()


_DNI = re.compile(r"([XYZ0-9])(?<![\w./-][XYZ0-9])([0-9]{6,7})-?([A-Z])(?![\w-])")


def _spanish_ids(where: _Text) -> Iterator[Span]:
    """Spanish DNI (``12345678Z``) and NIE (``X1234567L``) numbers, the letter optionally
    after a dash.

    Guard: the control letter must match (the number mod 23, an NIE's X, Y, Z read as 0, 1,
    2), which a random letter does 1 time in 23; a DNI has 8 digits, an NIE 7 after its
    letter; upper case only.
    """
    for match in _in_regions(_DNI, where, 7, upper=True):
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


def _emails(where: _Text) -> Iterator[Span]:
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


_COUNTRY_CODE_LIST = (
    "1 7 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 "
    "60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98 "
    "211 212 213 216 218 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 235 "
    "236 237 238 239 240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255 256 "
    "257 258 260 261 262 263 264 265 266 267 268 269 290 291 297 298 299 350 351 352 353 "
    "354 355 356 357 358 359 370 371 372 373 374 375 376 377 378 379 380 381 382 383 385 "
    "386 387 389 420 421 423 500 501 502 503 504 505 506 507 508 509 590 591 592 593 594 "
    "595 596 597 598 599 670 672 673 674 675 676 677 678 679 680 681 682 683 685 686 687 "
    "688 689 690 691 692 800 808 850 852 853 855 856 870 878 880 881 882 883 886 888 960 "
    "961 962 963 964 965 966 967 968 970 971 972 973 974 975 976 977 979 992 993 994 995 "
    "996 998"
)
_COUNTRY_CODES = frozenset(_COUNTRY_CODE_LIST.split())
"""Assigned ITU-T E.164 country calling codes (one to three digits, none a prefix of
another)."""


def _country_code_ok(digits: str) -> bool:
    """Whether an international number starts with an assigned country code (and, for +1,
    a North American area code, which starts 2-9)."""
    if digits[0] == "1":
        return len(digits) > 1 and digits[1] in "23456789"
    return any(digits[:n] in _COUNTRY_CODES for n in (1, 2, 3))


_E164 = re.compile(r"\+(?<![\w+]\+)[1-9][0-9 ().-]{6,24}[0-9](?!\w)")
_PHONE_PARENS = re.compile(r"\(([0-9]{1,4})\)")
_DOUBLE_SEPARATOR = re.compile(r"[ .-]{2}")
_SIGNED_DATE = re.compile(r"[0-9]{4}-[01][0-9]-[0-3][0-9]")


def _e164_phones(where: _Text) -> Iterator[Span]:
    """International phone numbers: ``+``, country code and subscriber number, 8 to 15 digits
    in all, with single spaces, dashes, dots and one parenthesised group allowed
    (``+44 20 7946 0958``, ``+1 (555) 123-4567``).

    Guard: the ``+`` must be followed directly by a digit 1-9 and not follow a letter, digit
    or ``+`` (so ``3 + 4 = 7`` and ``x+12`` are not findings); an assigned country code
    (``+2147483647`` and ``+4294967296``, signed integers, are not numbers anyone can call);
    no doubled separators; not a signed decimal (``+35236450.6``) or date (``+1980-02-29``);
    the number must not run on into more digits.
    """
    text = where.text
    for match in _in_regions(_E164, where, 8, sign="+"):
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
        if 8 <= len(digits) <= 15 and _country_code_ok(digits):
            yield match.span()


_NANP_PLAIN = re.compile(
    r"[1-9](?<![\w+/][1-9])(?<![02-9] [1-9])(?<![^1][.-][1-9])(?:(?<=1)[ .-](?=[2-9])[0-9]"
    r"|(?<=[2-9]))[0-9]{2}([.-])[0-9]{3}\1[0-9]{4}(?![\w/-]|[ .][0-9])"
)
_NANP_PARENS = re.compile(
    r"[1(](?<![\w+/.-][1(])(?<![02-9] [1(])(?:(?<=1) ?\(|(?<=\())[2-9][0-9]{2}\) ?[0-9]{3}"
    r"[ .-][0-9]{4}(?![\w/-]|[ .][0-9])"
)


def _nanp_phones(where: _Text) -> Iterator[Span]:
    """North American numbers: ``(555) 123-4567``, ``555-123-4567``, ``555.123.4567``, with
    an optional leading ``1-``/``1 ``.

    Guard: the area code starts 2-9; the bare form needs one consistent separator (``-`` or
    ``.``; spaces alone are too common between plain numbers); the number must stand alone
    (not inside a longer digit run, path, version string or decimal).
    """
    spans = [m.span() for m in _in_regions(_NANP_PLAIN, where, 10)]
    spans += [m.span() for m in _in_regions(_NANP_PARENS, where, 10, sign="(")]
    yield from sorted(spans)


_TRUNK = re.compile(
    r"0(?<![\w+./-]0)(?<![0-9] 0)[0-9]{2,4}(?:[ -][0-9]{3,8}){1,2}(?![\w/-]|[ .][0-9])"
)


def _trunk_phones(where: _Text) -> Iterator[Span]:
    """National numbers with a trunk prefix 0, in groups: ``020 7946 0958`` (UK),
    ``07700 900123``, ``030 12345678`` (Germany), 10 or 11 digits in all.

    Guard: the leading 0 and at least one space or dash (a bare digit run is not a phone);
    10-11 digits; not all one digit; not inside a longer digit run.
    """
    for match in _in_regions(_TRUNK, where, 10, sign="0"):
        digits = match.group().replace(" ", "").replace("-", "")
        if 10 <= len(digits) <= 11 and len(set(digits)) > 1:
            yield match.span()


_FRENCH = re.compile(
    r"0(?<![\w+./-]0)(?<![0-9] 0)[1-9]([ .])[0-9]{2}\1[0-9]{2}\1[0-9]{2}\1[0-9]{2}"
    r"(?![\w/-]|[ .][0-9])"
)


def _french_phones(where: _Text) -> Iterator[Span]:
    """French-style numbers in pairs: ``06 12 34 56 78``, ``01.23.45.67.89``.

    Guard: trunk 0 then 1-9, five pairs with one consistent separator, standing alone, and
    not a counting sequence (``<Buffer 01 02 03 04 05>`` in a byte dump).
    """
    for match in _in_regions(_FRENCH, where, 10, sign="0"):
        pairs = [int(match.group()[i : i + 2]) for i in range(0, 15, 3)]
        if any(b - a != 1 for a, b in itertools.pairwise(pairs)):
            yield match.span()


# --------------------------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------------------------

_DETECTORS: tuple[tuple[str, str, Callable[[_Text], Iterator[Span]]], ...] = (
    # Secrets first: where detections overlap, the earlier detector wins.
    (SECRET, "pem_private_key", _pem_private_keys),
    (SECRET, "jwt", _jwts),
    (SECRET, "github_token", _github_tokens),
    (SECRET, "aws_access_key", _aws_access_keys),
    (SECRET, "slack_token", _slack_tokens),
    (SECRET, "api_key", _api_keys),
    (SECRET, "google_api_key", _google_api_keys),
    (SECRET, "url_password", _url_credentials),
    (SECRET, "assigned_secret", _assigned_secrets),
    (IBAN, "iban", _ibans),
    (CARD, "card", _cards),
    (NATIONAL_ID, "us_ssn", _us_ssns),
    (NATIONAL_ID, "uk_nino", _uk_ninos),
    (NATIONAL_ID, "es_dni", _spanish_ids),
    (EMAIL, "email", _emails),
    (PHONE, "phone_e164", _e164_phones),
    (PHONE, "phone_nanp", _nanp_phones),
    (PHONE, "phone_national", _trunk_phones),
    (PHONE, "phone_fr", _french_phones),
)
DETECTORS: tuple[str, ...] = tuple(name for _, name, _ in _DETECTORS)
"""Names of the detectors (:attr:`Finding.detector`), most specific first."""


def scan(text: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> tuple[Finding, ...]:
    """Personal data and secrets in the first ``max_chars`` characters of ``text``.

    Findings come in text order and never overlap: where two detections overlap, the more
    specific one is kept (secrets, then IBANs, cards, national ids, e-mails, phones), so a
    card number is not also reported as a phone number. Offsets index into ``text``.
    """
    if max_chars < 0:
        raise ValueError(f"max_chars must be >= 0, got {max_chars}")
    where = _index(text[:max_chars])
    accepted: list[Finding] = []
    for kind, name, detect in _DETECTORS:
        new: list[Finding] = []
        j = 0
        for start, end in detect(where):
            # Drop a span overlapping a finding of an earlier detector or this one's previous.
            while j < len(accepted) and accepted[j].end <= start:
                j += 1
            if j < len(accepted) and accepted[j].start < end:
                continue
            if new and new[-1].end > start:
                continue
            new.append(Finding(kind, start, end, redact(where.text[start:end]), name))
        if new:
            accepted = sorted(accepted + new, key=lambda f: f.start)
    return tuple(accepted)


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
