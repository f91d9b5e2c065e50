"""Secrets: private keys, cloud and API tokens, passwords in URLs and assigned to secret names.

Each pattern starts with its literal prefix (a fast substring search) and checks the character
before it with a lookbehind.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator

from banditroute.privacy.findings import SECRET
from banditroute.privacy.index import Detector, Span, Text

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


def shannon_entropy(value: str) -> float:
    """Shannon entropy of the characters of ``value``, in bits per character (0 when empty)."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_NEWLINE = r"(?:\r?\n|(?:\\r)?\\n)"  # a line break, or its escape in JSON and .env text
_PEM_BODY = re.compile(
    rf"[ \t]*{_NEWLINE}(?:[ \t]*(?:Proc-Type|DEK-Info|Comment|Version):[^\r\n\\]{{0,200}}"
    rf"{_NEWLINE})*(?:[ \t]*{_NEWLINE}){{0,4}}[ \t]*[A-Za-z0-9+/=]{{16,4096}}"
)


def _pem_private_keys(where: Text) -> Iterator[Span]:
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


def _jwts(where: Text) -> Iterator[Span]:
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


def _github_tokens(where: Text) -> Iterator[Span]:
    """GitHub tokens: classic ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` and 36 or more
    letters and digits, and fine-grained ``github_pat_`` tokens.

    Guard: the prefix must start a word and the body be at least 36 (22 for ``github_pat_``)
    characters, so ``ghp_token`` in prose or code is not a finding.
    """
    for match in _GITHUB.finditer(where.text):
        yield match.span()


_AWS_KEY = re.compile(r"A[KS]IA(?<![A-Za-z0-9]A[KS]IA)[A-Z0-9]{16}(?![A-Za-z0-9])")


def _aws_access_keys(where: Text) -> Iterator[Span]:
    """AWS access key ids: ``AKIA`` (long-term) or ``ASIA`` (temporary) and 16 upper-case
    letters or digits.

    Guard: exactly 20 characters, standing alone (no letter or digit on either side).
    """
    if "AKIA" not in where.text and "ASIA" not in where.text:
        return
    for match in _AWS_KEY.finditer(where.text):
        yield match.span()


_SLACK = re.compile(r"xox(?<![A-Za-z0-9]xox)[baprs]-[A-Za-z0-9-]{10,250}(?![A-Za-z0-9-])")


def _slack_tokens(where: Text) -> Iterator[Span]:
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


def _api_keys(where: Text) -> Iterator[Span]:
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


def _google_api_keys(where: Text) -> Iterator[Span]:
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


def _url_credentials(where: Text) -> Iterator[Span]:
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


def _assigned_secrets(where: Text) -> Iterator[Span]:
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


DETECTORS: tuple[tuple[str, str, Detector], ...] = (
    (SECRET, "pem_private_key", _pem_private_keys),
    (SECRET, "jwt", _jwts),
    (SECRET, "github_token", _github_tokens),
    (SECRET, "aws_access_key", _aws_access_keys),
    (SECRET, "slack_token", _slack_tokens),
    (SECRET, "api_key", _api_keys),
    (SECRET, "google_api_key", _google_api_keys),
    (SECRET, "url_password", _url_credentials),
    (SECRET, "assigned_secret", _assigned_secrets),
)
"""The secret detectors, most specific first."""
