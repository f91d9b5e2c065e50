"""Personal data and secret detection: each detector's positives and negatives, offsets,
previews, precedence, data classes, the scan bound and behaviour on hostile input.

Token-shaped test values (GitHub, Slack, OpenAI/Anthropic, Google) are built at run time from
a seeded generator, so no literal in this file looks like a leaked credential to a scanner;
card numbers, IBANs and national ids carry valid checksums computed here independently of the
module under test.
"""

from __future__ import annotations

import itertools
import random
import re
import string
import time
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banditroute.privacy import (
    CARD,
    DATA_CLASSES,
    DEFAULT_MAX_CHARS,
    DETECTORS,
    EMAIL,
    ENTROPY_THRESHOLD,
    IBAN,
    IBAN_LENGTHS,
    KINDS,
    NATIONAL_ID,
    PHONE,
    SECRET,
    Finding,
    classify,
    iban_valid,
    luhn_valid,
    most_sensitive,
    redact,
    scan,
    sensitivity,
    shannon_entropy,
)
from banditroute.privacy.normalise import normalise

HANG_S = 120.0
"""Bound on one scan in these tests: far above any real run (well under a second unloaded), so
only a hang (catastrophic backtracking, quadratic work) can exceed it."""

_RNG = random.Random(20240521)
_ALNUM = string.ascii_letters + string.digits


def fake(length: int, alphabet: str = _ALNUM) -> str:
    """A random-looking (seeded, so stable) string: the body of a fake token."""
    return "".join(_RNG.choice(alphabet) for _ in range(length))


def luhn_complete(partial: str) -> str:
    """``partial`` plus the check digit that makes it pass Luhn (computed independently)."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:  # these digits are doubled once the check digit is appended
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return partial + str((10 - total % 10) % 10)


def iban_with_check(country: str, bban: str) -> str:
    """An IBAN with correct ISO 13616 check digits for ``bban`` (computed independently)."""
    digits = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


def group4(value: str) -> str:
    """``value`` in space-separated groups of four, as IBANs and cards are printed."""
    return " ".join(value[i : i + 4] for i in range(0, len(value), 4))


def fullwidth(value: str) -> str:
    """``value`` with its printable ASCII characters (not spaces) in their full-width forms."""
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in value)


def dni(number: int) -> str:
    """A Spanish DNI with its control letter."""
    return f"{number:08d}" + "TRWAGMYFPDXBNJZSQVHLCKE"[number % 23]


GITHUB_CLASSIC = "ghp_" + fake(36)
GITHUB_OAUTH = "gho_" + fake(36)
GITHUB_FINE = "github_pat_" + fake(22) + "_" + fake(59)
SLACK = "xoxb-" + fake(12, string.digits) + "-" + fake(13, string.digits) + "-" + fake(24)
OPENAI = "sk-proj-" + fake(48, _ALNUM + "-_")
ANTHROPIC = "sk-ant-api03-" + fake(93, _ALNUM + "-_") + "AA"
STRIPE = "sk_live_" + fake(24, _ALNUM)
STRIPE_RESTRICTED = "rk_live_" + fake(99, _ALNUM)
GOOGLE = "AIza" + fake(35, _ALNUM + "-_")
AWS_EXAMPLE = "AKIAIOSFODNN7EXAMPLE"  # the AWS documentation's example key id
AWS_TEMPORARY = "ASIA" + fake(16, string.ascii_uppercase + string.digits)
AWS_SECRET_EXAMPLE = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS docs example secret
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)  # the jwt.io example token
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    + "\n".join(fake(64, _ALNUM + "+/") for _ in range(4))
    + "\n-----END RSA PRIVATE KEY-----"
)
PEM_TRUNCATED = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + fake(70, _ALNUM + "+/")
PEM_ESCAPED = (  # as in a JSON service-account file: newlines escaped
    "-----BEGIN PRIVATE KEY-----\\n" + fake(64, _ALNUM + "+/") + "\\n-----END PRIVATE KEY-----"
)
HIGH_ENTROPY = fake(32)

POSITIVES: list[tuple[str, str, str, str]] = [
    # (kind, detector, text around the value with {} for it, value)
    (EMAIL, "email", "Contact {} for details.", "bob.smith+tag@example.co.uk"),
    (EMAIL, "email", "<a href='mailto:{}'>", "alice_92@mail.example.org"),
    (EMAIL, "email", "Send to {}.", "j@x.io"),
    (EMAIL, "email", "Write to {} today.", "josé@mail.com"),
    (EMAIL, "email", "Écrivez à {} demain.", "jean.dupont@société.fr"),
    (EMAIL, "email", "联系 {} 谢谢", "用户@例子.中国"),
    # Disguised: a full-width at sign, zero-width characters inside, full-width letters.
    (EMAIL, "email", "Write to {} today.", "zorro.fullwidth\uff20example.com"),
    (EMAIL, "email", "Write to {} today.", "zorro.\u200bzero@example.com"),
    (EMAIL, "email", "Write to {} today.", "zorro\u2060@exa\u200dmple.com"),
    (
        EMAIL,
        "email",
        "Write to {}.",
        "\uff5a\uff4f\uff52\uff52\uff4f\uff20\uff45\uff58.\uff4f\uff52\uff47",
    ),
    (PHONE, "phone_e164", "Call {} now", "+44 20 7946 0958"),
    (PHONE, "phone_e164", "tel: {}", "+1 (555) 123-4567"),
    (PHONE, "phone_e164", "whatsapp {}.", "+14155552671"),
    (PHONE, "phone_e164", "mobile {}", "+33 6 12 34 56 78"),
    (PHONE, "phone_e164", "office {}", "+49-30-1234567"),
    (PHONE, "phone_e164", "reach me at {}", "+44 (0)20 7946 0958"),
    (PHONE, "phone_nanp", "Call {} after 5pm", "(555) 123-4567"),
    (PHONE, "phone_nanp", "Call {} after 5pm", "555-123-4567"),
    (PHONE, "phone_nanp", "Phone: {}.", "555.123.4567"),
    (PHONE, "phone_nanp", "Toll free {}", "1-800-555-0199"),
    (PHONE, "phone_nanp", "Dial {}", "1 (800) 555-0199"),
    (PHONE, "phone_national", "London office {}", "020 7946 0958"),
    (PHONE, "phone_national", "text {} please", "07700 900123"),
    (PHONE, "phone_national", "Berlin: {}", "030 12345678"),
    (PHONE, "phone_fr", "Appelez le {}", "06 12 34 56 78"),
    (PHONE, "phone_fr", "Tel {}", "01.23.45.67.89"),
    (CARD, "card", "Visa {} exp 12/29", "4111 1111 1111 1111"),
    (CARD, "card", "card={}", "4111-1111-1111-1111"),
    (CARD, "card", "number {}", "4111111111111111"),
    (CARD, "card", "full-width {}", fullwidth("4111 1111 1111 1111")),
    (CARD, "card", "zero-width joined {}", "4111\u200b1111\u200b1111\u200b1111"),
    (CARD, "card", "Mastercard {}", "5555 5555 5555 4444"),
    (CARD, "card", "Amex {}", "3782 822463 10005"),
    (CARD, "card", "Discover {}", "6011111111111117"),
    (CARD, "card", "generated {}", luhn_complete("4" + "".join(map(str, range(1, 10))) + "12345")),
    (CARD, "card", "19 digits {}", group4(luhn_complete("62" + "7" * 15 + "1"))),
    (IBAN, "iban", "Pay to {} today", "GB82 WEST 1234 5698 7654 32"),
    (IBAN, "iban", "IBAN:{}", "GB82WEST12345698765432"),
    (IBAN, "iban", "Konto {}.", "DE89 3704 0044 0532 0130 00"),
    (IBAN, "iban", "RIB {}", "FR14 2004 1010 0505 0001 3M02 606"),
    (IBAN, "iban", "rekening {}", "NL91ABNA0417164300"),
    (IBAN, "iban", "compte {} EUR", "BE68 5390 0754 7034"),
    (IBAN, "iban", "konto {}", "NO93 8601 1117 947"),
    (IBAN, "iban", "generated {}", group4(iban_with_check("ES", "21000418450200051332"))),
    (NATIONAL_ID, "us_ssn", "SSN {} on file", "536-22-1234"),
    (NATIONAL_ID, "us_ssn", "ssn:{}", "078-05-1120"),
    (NATIONAL_ID, "us_ssn", "My social security number is {}", "078051120"),
    (NATIONAL_ID, "us_ssn", "SSN: {}.", "536 22 1234"),
    (NATIONAL_ID, "us_ssn", "my ss# is {}", "536221234"),
    (NATIONAL_ID, "uk_nino", "NI number {}", "AB 12 34 56 C"),
    (NATIONAL_ID, "uk_nino", "NINO {}.", "JG103759A"),
    (NATIONAL_ID, "es_dni", "DNI {}", dni(12345678)),
    (NATIONAL_ID, "es_dni", "DNI {}", "12345678-Z"),
    (NATIONAL_ID, "es_dni", "NIE {}", "X1234567L"),
    (NATIONAL_ID, "es_dni", "NIE {}", "Y1234567X"),
    (SECRET, "pem_private_key", "key:\n{}\nthanks", PEM),
    (SECRET, "pem_private_key", "truncated: {}", PEM_TRUNCATED),
    (SECRET, "pem_private_key", '{{"private_key": "{}\\n"}}', PEM_ESCAPED),
    (SECRET, "aws_access_key", "aws_access_key_id = {}", AWS_EXAMPLE),
    (SECRET, "aws_access_key", "id {} expires", AWS_TEMPORARY),
    (SECRET, "github_token", "git clone https://{}@github.com/o/r", GITHUB_CLASSIC),
    (SECRET, "github_token", "GH={}", GITHUB_OAUTH),
    (SECRET, "github_token", "use {} for the API", GITHUB_FINE),
    (SECRET, "slack_token", "slack {}", SLACK),
    (SECRET, "api_key", "client = OpenAI(api_key={})", OPENAI),
    (SECRET, "api_key", "ANTHROPIC_API_KEY={}", ANTHROPIC),
    (SECRET, "api_key", "stripe.api_key = {}", STRIPE),
    (SECRET, "api_key", "charge with {} please", STRIPE_RESTRICTED),
    (SECRET, "google_api_key", "maps?key={}&q=x", GOOGLE),
    (SECRET, "jwt", "Authorization: Bearer {}", JWT),
    (SECRET, "url_password", "postgres://admin:{}@db.internal:5432/app", "S3cr3t-P4ss"),
    (SECRET, "url_password", "REDIS_URL=redis://:{}@cache.internal:6379/0", "S3cr3t-P4ss"),
    (SECRET, "url_password", "rediss://:{}@cache.acme.io:6380", "S3cr3t-P4ss"),
    (SECRET, "assigned_secret", "export AWS_SECRET_ACCESS_KEY={}", AWS_SECRET_EXAMPLE),
    (SECRET, "assigned_secret", 'config = {{"client_secret": "{}"}}', HIGH_ENTROPY),
    (SECRET, "assigned_secret", "DB_PASSWORD={}\nDB_HOST=x", HIGH_ENTROPY),
    (SECRET, "assigned_secret", "api_key = '{}'", HIGH_ENTROPY),
    (SECRET, "assigned_secret", "token := `{}`", HIGH_ENTROPY),
    (SECRET, "assigned_secret", "'password' => '{}',", HIGH_ENTROPY),
    (SECRET, "assigned_secret", "password: {}", "Tr0ub4dor&3-horse-battery"),
    (SECRET, "assigned_secret", "Authorization: Bearer {}", HIGH_ENTROPY),
    (SECRET, "assigned_secret", "client_secret={}", "qWeRtYzXaBcDvFgHjKlM"),
    (SECRET, "assigned_secret", "[pypi]\nusername:me\npassword:{}\n", "yh^%#rest-of-my-password"),
]


_POSITIVE_IDS = [f"{detector}:{value[:24]}" for _, detector, _, value in POSITIVES]


@pytest.mark.parametrize(("kind", "detector", "template", "value"), POSITIVES, ids=_POSITIVE_IDS)
def test_detector_finds_value_at_its_offsets(
    kind: str, detector: str, template: str, value: str
) -> None:
    """Each detector finds its value, reports the right kind and exactly the value's offsets."""
    text = template.format(value)
    findings = scan(text)
    start = text.index(value)
    assert Finding(kind, start, start + len(value), redact(value), detector) in findings
    assert len(findings) == 1, findings


@pytest.mark.parametrize(("kind", "detector", "template", "value"), POSITIVES, ids=_POSITIVE_IDS)
def test_preview_never_contains_the_value(
    kind: str, detector: str, template: str, value: str
) -> None:
    """A finding's preview is redacted: shorter than the value and never containing it."""
    (finding,) = scan(template.format(value))
    assert "***" in finding.preview
    assert value not in finding.preview
    assert len(finding.preview.replace("***", "")) <= len(value) // 2


NEGATIVES: list[str] = [
    # Checksums that fail.
    "Card 4111 1111 1111 1112 expired",
    "random 16 digits 5234 8811 0923 4455",
    "IBAN GB83 WEST 1234 5698 7654 32 (typo)",
    "DE88 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 3",  # one character short for GB
    "DNI 12345678A",
    "NIE X1234567A",
    # National ids outside their rules.
    "SSN 000-12-3456",
    "SSN 666-12-3456",
    "SSN 912-12-3456",
    "SSN 536-00-1234",
    "SSN 536-22-0000",
    "order 536221234 (no dashes, no SSN named before it)",
    "Social security reform passed in 1983; ticket 536221234 is unrelated and long after the words",
    "HMRC specimen QQ 12 34 56 C",
    "GB123456A is not issued",
    "AB123456E has a bad suffix",
    # Ordinary prose and numbers.
    "The committee met on Tuesday afternoon to discuss the budget for the coming year.",
    "Meeting on 2024-01-15 at 10:30, or 15/01/2024, or 01.02.2024, or Jan 5, 2024.",
    "Years 1999 2000 2001 2002 and 2003 were good.",
    "It costs $1,234,567.89 or EUR 1.234.567,89 or 12345.67 per unit.",
    "Solve 3 + 4 = 7 and 12345 * 67890 = 838102050, then 2^31 - 1 = 2147483647.",
    "x+12345678 and a = b +12",
    "Upgrade from v1.2.3 to 10.0.19041.1 or 2.31.0-rc.1.",
    "Ping 192.168.100.200 and 10.0.0.1:8080.",
    "uuid 123e4567-e89b-12d3-a456-426614174000 sha 5f4dcc3b5aa765d61d8327deb882cf99",
    "epoch ms 1700000000000 and 1700000000",
    "https://web.archive.org/web/20170809091249/https://example.com",
    "Decimal('+35236450.6') and Decimal('1.38435736E+12')",
    "Decimal('314292388910493.12343437128')",
    "INT_MAX is +2147483647 and 1 << 32 is +4294967296",
    "+33 123 4567 is too short for a French number",
    "np.datetime64('+1980-02-29 01:02:03')",
    "rng = np.random.default_rng(6981396440634228121)",
    "x = 35184372088832*sqrt(2)",
    "https://chromestatus.com/feature/5068609911521280",
    "<Buffer 01 02 03 04 05>",
    ":doi:`10.1137/10081232X`",
    "ISBN 978-3-16-148410-0",
    "0000 0000 0000 and 000 0000 0000",
    # Code with numbers.
    "def f(x):\n    return [0, 100, 2000, 30000] + list(range(10, 20, 2))\n",
    "for (int i = 0; i < 1000000; i++) { total += i * 3.14159265358979; }",
    "timeout=30, retries=5, port=8080, max_tokens=4096",
    "max_tokens = 1000000000000000",
    "tokenizer = AutoTokenizer.from_pretrained(model_name)",
    "tokens = tokenizer.encode(text)",
    "tokenizer = GenericTokenizer(key_conditions)",
    "path, self.token_pos = UpdateExpressionPathParser(tokens)",
    "if token.type == Token.ATTRIBUTE_NAME:",
    "username, _, password = base64.b64decode(rest).decode()",
    "private_key = Ed25519PrivateKey.generate()",
    "secret = make_secret_v2(length=32)",
    "_, host, port, access_key, secret_key = s3_example_simple",
    "SECRET_NAME = PROD_DB_SECRET_V2_ARN",
    "password = os.environ['DB_PASSWORD']",
    "secret = settings.SECRET_KEY_VALUE",
    "api_key = YOUR_API_KEY_HERE_PLEASE",
    "api_key = ${OPENAI_API_KEY_FROM_ENV}",
    "password = hunter2",
    "password = hunter2hunter2hunter2",
    "password = ********************",
    "token: xxxxxxxxxxxxxxxxxxxxxxxx",
    "postgres://user:password@localhost:5432/db",
    "https://example.com:8080/path and http://host:443@x",
    "postgresql://postgres:postgres@localhost:5432/app",
    "https://abc:xyz@shop.acme.io/ and https://user:S3cr3t-P4ss@example.com/",
    "token_type = 'bare-quoted-string' and _TOKEN_PATH = 'latest/api/token'",
    '"Resource": "arn:aws:secretsmanager:*:*:secret:db-credentials-*"',
    '"Resource":"arn:aws:secretsmanager:*:*:secret:aws/ssm/3p/*"',
    # Near misses for the other detectors.
    "icon@2x.png and logo@3x.jpg",
    "git@github.com:org/repo.git",
    "npm install lodash@4.17.21 and @types/node",
    "ssh user@localhost",
    "https://deploy@git.acme.io/repo.git",
    "sk-learn-is-a-python-library and risk-adjusted-returns-over-twenty-years",
    "-----BEGIN CERTIFICATE----- and -----BEGIN PUBLIC KEY-----",
    "Remove the '-----BEGIN RSA PRIVATE KEY-----' and '-----END RSA PRIVATE KEY-----' lines.",
    "xoxb-your-token-here-please",
    "ghp_token is a variable name",
    "AKIAIOSFODNN7EXAMPL is too short, XAKIAIOSFODNN7EXAMPLE is inside a word",
    "eyJhbGciOi alone is not a token",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_non_sensitive_text_has_no_findings(text: str) -> None:
    """Failed checksums, invalid ids, prose, dates, prices, math, versions and code are clean."""
    assert scan(text) == ()


def test_offsets_of_several_findings_in_one_text() -> None:
    """Several findings in one text come in order, each at its value's exact offsets."""
    values = ["bob@example.com", "+44 20 7946 0958", "4111 1111 1111 1111", AWS_EXAMPLE]
    text = "Mail {}, call {}; card {} (key {}).".format(*values)
    findings = scan(text)
    assert [text[f.start : f.end] for f in findings] == values
    assert [f.kind for f in findings] == [EMAIL, PHONE, CARD, SECRET]
    assert all(f.start < g.start for f, g in itertools.pairwise(findings))


def test_offsets_count_characters_in_non_ascii_text() -> None:
    """Offsets are character (code point) offsets, also around non-ASCII, emoji and lone
    surrogates."""
    text = "Контакт 🙂: bob@example.com, 電話 +44 20 7946 0958 \udfff DNI 12345678Z"
    findings = scan(text)
    assert [text[f.start : f.end] for f in findings] == [
        "bob@example.com",
        "+44 20 7946 0958",
        "12345678Z",
    ]


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        ("card 4111 1111 1111 1111 only", "4111 1111 1111 1111", CARD),
        ("IBAN DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 00", IBAN),
        ("api_key = " + GOOGLE, GOOGLE, SECRET),
        ("Bearer " + JWT, JWT, SECRET),
        ("postgres://bob:S3cr3t-P4ss@mail.acme.io/db", "S3cr3t-P4ss", SECRET),
    ],
)
def test_more_specific_detection_wins_an_overlap(text: str, value: str, kind: str) -> None:
    """Overlapping detections keep the more specific one: no phone inside a card, no card
    inside an IBAN, one secret per token, no e-mail made of a URL's password and host."""
    findings = scan(text)
    assert [(f.kind, text[f.start : f.end]) for f in findings] == [(kind, value)]


def test_long_digit_runs_are_not_phone_numbers() -> None:
    """Card-length digit groups that fail Luhn are neither cards nor phone numbers."""
    for text in ("4111 1111 1111 1112", "0123 4567 8901 2345", "020 7946 0958 1234 5678"):
        assert scan(text) == (), text


def test_iban_running_into_upper_case_text_is_cut_at_its_length() -> None:
    """An IBAN followed by an upper-case group is cut at its country's length."""
    text = "BE68 5390 0754 7034 ABCD EFGH"
    (finding,) = scan(text)
    assert text[finding.start : finding.end] == "BE68 5390 0754 7034"


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ((), "public"),
        ((EMAIL,), "pii"),
        ((PHONE, CARD), "pii"),
        ((IBAN, NATIONAL_ID), "pii"),
        ((SECRET,), "secret"),
        ((EMAIL, SECRET, PHONE), "secret"),
    ],
)
def test_classify_maps_findings_to_a_data_class(kinds: tuple[str, ...], expected: str) -> None:
    """Any secret makes a text "secret", else any personal data "pii", else "public"."""
    findings = [Finding(kind, i, i + 1, "***") for i, kind in enumerate(kinds)]
    assert classify(findings) == expected
    assert classify(iter(findings)) == expected


def test_classify_of_scanned_text() -> None:
    """classify(scan(text)) gives the class a router needs for real texts."""
    assert classify(scan("What is the capital of France?")) == "public"
    assert classify(scan("Email bob@example.com about it")) == "pii"
    assert classify(scan(f"bob@example.com, key {AWS_EXAMPLE}")) == "secret"


def test_data_classes_are_ordered_by_sensitivity() -> None:
    """DATA_CLASSES runs from least to most sensitive and every kind has a home."""
    assert DATA_CLASSES == ("public", "internal", "pii", "secret")
    assert [sensitivity(name) for name in DATA_CLASSES] == [0, 1, 2, 3]
    assert set(KINDS) == {EMAIL, PHONE, CARD, IBAN, NATIONAL_ID, SECRET}


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("public", "public", "public"),
        ("public", "internal", "internal"),
        ("internal", "pii", "pii"),
        ("pii", "public", "pii"),
        ("secret", "pii", "secret"),
        ("internal", "secret", "secret"),
    ],
)
def test_most_sensitive_picks_the_higher_class(a: str, b: str, expected: str) -> None:
    """most_sensitive returns the more sensitive class, whichever argument holds it."""
    assert most_sensitive(a, b) == expected
    assert most_sensitive(b, a) == expected


@pytest.mark.parametrize(("a", "b"), [("confidential", "pii"), ("pii", "PII"), ("", "public")])
def test_most_sensitive_rejects_unknown_classes(a: str, b: str) -> None:
    """An unknown data class name raises ValueError that names the offending value."""
    bad = a if a not in DATA_CLASSES else b
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        most_sensitive(a, b)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4111111111111111", "41***11"),
        ("abcdefgh", "ab***gh"),
        ("abcdefg", "a***g"),
        ("abcd", "a***d"),
        ("abc", "***"),
        ("", "***"),
    ],
)
def test_redact_shows_at_most_half_of_a_value(value: str, expected: str) -> None:
    """redact keeps two characters at each end of long values, one of short, none of tiny."""
    assert redact(value) == expected


@pytest.mark.parametrize(
    ("value", "bits"),
    [("", 0.0), ("aaaa", 0.0), ("abab", 1.0), ("abcd", 2.0), ("0123456789abcdef", 4.0)],
)
def test_shannon_entropy_in_bits_per_character(value: str, bits: float) -> None:
    """shannon_entropy measures bits per character of the value's character distribution."""
    assert shannon_entropy(value) == pytest.approx(bits)


def test_entropy_threshold_separates_words_from_random_values() -> None:
    """Repeated words fall below the threshold, random 16+ character values above it."""
    assert shannon_entropy("hunter2hunter2hunter2") < ENTROPY_THRESHOLD
    assert shannon_entropy("passwordpassword") < ENTROPY_THRESHOLD
    assert shannon_entropy(HIGH_ENTROPY) > ENTROPY_THRESHOLD
    assert shannon_entropy(AWS_SECRET_EXAMPLE) > ENTROPY_THRESHOLD


@pytest.mark.parametrize("length", [16, 24, 40])
def test_random_values_assigned_to_secret_names_are_found(length: int) -> None:
    """The guards that keep code and words out still let random values through: nearly all
    random letter-and-digit values of 16+ characters assigned to a secret name are found."""
    rng = random.Random(length)
    templates = ["api_key = {}", "SECRET={}", "db_password: {}", "token := '{}'", '"secret": "{}"']
    found = 0
    for i in range(200):
        value = "".join(rng.choice(_ALNUM) for _ in range(length))
        text = templates[i % len(templates)].format(value)
        found += any(f.kind == SECRET for f in scan(text))
    assert found >= (190 if length == 16 else 197)


def test_checksum_helpers_agree_with_the_reference_computations() -> None:
    """luhn_valid and iban_valid accept values completed here and reject altered ones."""
    for partial in ("411111111111111", "37828224631000", "601111111111111", "2223000048400"):
        complete = luhn_complete(partial)
        assert luhn_valid(complete)
        assert not luhn_valid(complete[:-1] + str((int(complete[-1]) + 1) % 10))
    for country, bban in (("GB", "WEST12345698765432"), ("DE", "370400440532013000")):
        iban = iban_with_check(country, bban)
        assert iban_valid(iban)
        assert not iban_valid(iban[:2] + f"{(int(iban[2:4]) + 1) % 100:02d}" + iban[4:])
    assert not iban_valid("XX82WEST12345698765432")  # unknown country


def test_scan_reads_at_most_max_chars() -> None:
    """Only the first max_chars characters are scanned: later values are not seen, a value cut
    by the bound is not reported, and a negative bound is an error."""
    value = "bob@example.com"
    text = "x" * 100 + " " + value
    assert scan(text, max_chars=len(text)) != ()
    assert scan(text, max_chars=100) == ()
    assert scan(text, max_chars=len(text) - 4) == ()  # bob@example.
    assert scan(text, max_chars=0) == ()
    with pytest.raises(ValueError, match="max_chars"):
        scan(text, max_chars=-1)


def test_one_megabyte_prompt_is_bounded_by_default() -> None:
    """A 1 MB prompt scans only its first DEFAULT_MAX_CHARS characters (it finishes: the bound
    only catches a hang; speed is measured by benchmarks/privacy_scan.py)."""
    filler = "The quick brown fox jumps over 13 lazy dogs on 2024-01-15; x = 3 + 4. "
    body = ("bob@example.com " + filler * (1_000_000 // len(filler)))[:999_970]
    text = body + " 4111111111111111"
    started = time.perf_counter()
    findings = scan(text)
    assert time.perf_counter() - started < HANG_S
    assert [f.kind for f in findings] == [EMAIL]  # the card at the end is beyond the bound
    assert all(f.end <= DEFAULT_MAX_CHARS for f in findings)


PATHOLOGICAL = {
    "letters": "a" * 1_000_000,
    "digits": "4" * 1_000_000,
    "digit pairs": "44 " * 333_333,
    "plus signs": "+1 " * 333_333,
    "at signs": "a@" * 500_000,
    "dotted domain": "x@" + "a." * 500_000,
    "jwt header run": "eyJ" + "a" * 1_000_000,
    "jwt segments": "eyJaaaaa." * 111_111,
    "assignments": "password=" * 111_111,
    "colons": ":" * 1_000_000,
    "pem headers": "-----BEGIN " * 90_909,
    "iban groups": "GB82 WEST " * 100_000,
    "phone groups": "(555) 555-" * 100_000,
    "url credentials": "://a:b@" * 142_857,
    "sk run": "sk-" + "a1" * 500_000,
    "full-width at signs": "a\uff20" * 500_000,
    "zero-width spaces": "a\u200b" * 500_000,
    "combining marks": "e\u0301" * 500_000,
    "ligatures": "\ufb01" * 1_000_000,
    "zero-width addresses": "ab\u200b\uff20c.de " * 125_000,
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_pathological_megabyte_finishes(name: str) -> None:
    """Inputs built to make regexes backtrack finish even when a whole megabyte is scanned (no
    catastrophic backtracking). The bound only catches a hang, so a loaded machine cannot fail
    it; how fast they finish is measured by benchmarks/privacy_scan.py."""
    text = PATHOLOGICAL[name]
    started = time.perf_counter()
    findings = scan(text, max_chars=len(text))
    assert time.perf_counter() - started < HANG_S
    assert all(0 <= f.start < f.end <= len(text) for f in findings)


_FRAGMENTS = [
    "4111 1111 1111 1111",
    "GB82 WEST 1234 5698 7654 32",
    "bob@example.com",
    "+44 20 7946 0958",
    "(555) 123-4567",
    "AB 12 34 56 C",
    "12345678Z",
    "536-22-1234",
    AWS_EXAMPLE,
    "password = ",
    "eyJ",
    "-----BEGIN RSA PRIVATE KEY-----",
    "://u:",
    "@",
    "\uff20",
    "\u200b",
    "\ufb01",
    "\u0301",
    "\uff14",
    "+",
    "-",
    " ",
    "0",
    "7",
    "A",
    ".",
]
_TEXTS = st.one_of(
    st.text(max_size=300),
    st.text(st.characters(exclude_categories=()), max_size=100),  # lone surrogates too
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=4)), max_size=30).map("".join),
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(text=_TEXTS, max_chars=st.integers(0, 400))
def test_scan_never_raises_and_findings_are_well_formed(text: str, max_chars: int) -> None:
    """For arbitrary text scan never raises; findings lie within the scanned text, in order,
    without overlap, with a known kind and detector and a redacted preview."""
    findings = scan(text, max_chars=max_chars)
    previous_end = 0
    for finding in findings:
        assert previous_end <= finding.start < finding.end <= min(len(text), max_chars)
        previous_end = finding.end
        value = text[finding.start : finding.end]
        assert finding.kind in KINDS
        assert finding.detector in DETECTORS
        assert finding.preview == redact(value)
        assert value not in finding.preview
    assert classify(findings) in DATA_CLASSES


_WORDS = st.lists(st.text(string.ascii_letters, min_size=1, max_size=8), max_size=6).map(" ".join)


CARD_SHAPES = [
    # (issuer prefix, length): Visa, Amex, Diners, JCB, Mastercard, Maestro, Discover, UnionPay
    *[("4", n) for n in (13, 16, 19)],
    ("34", 15),
    ("37", 15),
    ("36", 14),
    ("3528", 19),
    *[(p, 16) for p in ("51", "55", "2221", "2720")],
    ("50", 18),
    ("6011", 16),
    ("62", 19),
    ("65", 17),
]


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    prefix=_WORDS,
    suffix=_WORDS,
    shape=st.sampled_from(CARD_SHAPES),
    digits=st.text("0123456789", min_size=18, max_size=18),
    grouped=st.booleans(),
)
def test_any_luhn_valid_card_between_words_is_found(
    prefix: str, suffix: str, shape: tuple[str, int], digits: str, grouped: bool
) -> None:
    """Every Luhn-valid number of an issuer's prefix and length is a card, at its offsets
    (grouped when longer than 16 digits)."""
    issuer, length = shape
    number = luhn_complete((issuer + digits)[: length - 1])
    value = group4(number) if grouped or length > 16 else number
    text = f"{prefix} {value} {suffix}"
    start = len(prefix) + 1
    assert [(f.kind, f.start, f.end) for f in scan(text)] == [(CARD, start, start + len(value))]


@pytest.mark.parametrize(
    "partial",
    [
        "41111111111111",  # Visa prefix, 15 digits
        "4111111111111111",  # Visa prefix, 17 digits
        "2017080909124",  # a 14-digit timestamp, not a 2-series Mastercard
        "201708090912345",  # 16 digits starting 2017
        "6011111111111",  # Discover prefix, 14 digits
        "1234567890123",  # leading 1
        "7234567890123456",  # leading 7
    ],
)
def test_luhn_valid_number_outside_issuer_shapes_is_not_a_card(partial: str) -> None:
    """A Luhn-valid number whose length or prefix no card issuer uses is not a card."""
    assert scan(f"ref {luhn_complete(partial)} ok") == ()


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    prefix=_WORDS,
    suffix=_WORDS,
    country=st.sampled_from(sorted(IBAN_LENGTHS)),
    data=st.data(),
    grouped=st.booleans(),
)
def test_any_valid_iban_is_found_and_a_wrong_check_digit_is_not(
    prefix: str, suffix: str, country: str, data: st.DataObject, grouped: bool
) -> None:
    """Every IBAN with its country's length and correct check digits is found; changing the
    check digits makes it not an IBAN."""
    alphabet = string.ascii_uppercase + string.digits
    length = IBAN_LENGTHS[country] - 4
    bban = data.draw(st.text(alphabet, min_size=length, max_size=length), label="bban")
    iban = iban_with_check(country, bban)
    value = group4(iban) if grouped else iban
    text = f"{prefix} {value} {suffix}"
    found = [(f.kind, text[f.start : f.end]) for f in scan(text)]
    assert (IBAN, value) in found
    wrong = iban[:2] + f"{(int(iban[2:4]) + 1) % 100:02d}" + iban[4:]
    wrong_value = group4(wrong) if grouped else wrong
    assert IBAN not in {f.kind for f in scan(f"{prefix} {wrong_value} {suffix}")}


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("plain ascii", "plain ascii"),
        ("caf\u00e9 au lait", "caf\u00e9 au lait"),
        ("j\u200bane\uff20ex.org", "jane@ex.org"),
        ("\ufb01ne e\u0301t\u00e9", "fine \u00e9t\u00e9"),
        ("\u00ad\ufeffab\u200d", "ab"),
        ("\uff21\uff22 \uff11\uff12", "AB 12"),
    ],
)
def test_normalise_folds_look_alikes_and_maps_every_offset_back(text: str, normalised: str) -> None:
    """normalise gives NFKC text without format characters, and each of its characters maps
    back to the original characters it came from (a start to the first, an end past the
    last), so a finding in it can be reported in the original text."""
    result = normalise(text)
    assert result.text == normalised
    for start in range(len(normalised)):
        for end in range(start + 1, len(normalised) + 1):
            lo, hi = result.original_start(start), result.original_end(end)
            assert 0 <= lo < hi <= len(text)
            piece = text[lo:hi]
            folded = "".join(ch for ch in piece if ch not in "\u00ad\ufeff\u200b\u200d")
            assert normalised[start:end] in unicodedata.normalize("NFKC", folded)
