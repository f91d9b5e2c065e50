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

Disguises do not hide a value: the window is NFKC-normalised and stripped of invisible format
characters first (:mod:`~banditroute.privacy.normalise`: a full-width at sign, full-width digits,
a zero-width space inside an address), and findings are mapped back to the original offsets.

Work is bounded: :func:`scan` reads at most ``max_chars`` characters from the start of the
text (anything after is not seen; a caller that must be sure can treat longer prompts as
sensitive), and every pattern has bounded repetitions and only one way to match a given span
(no nested quantifiers, so no catastrophic backtracking): a hostile megabyte scans in well
under a second. Work is also small: CPython regexes that start with a character class cost
about 10 ns a character, so the text is mapped once to byte classes where digit runs, IBAN
starts and ``=``/``:`` operators are found with literal searches (see
:class:`~banditroute.privacy.index.Text`), the numeric detectors run only inside those digit
runs, and the secret patterns start with their literal prefix (``AKIA``, ``eyJ``,
``sk-``...). A 2 KB prompt costs about 40 us.
The package is pure; besides the standard library it uses ``phonenumbers`` (libphonenumber's
metadata) for the lengths of international numbers. Detectors live by kind in
:mod:`~banditroute.privacy.secrets`, :mod:`~banditroute.privacy.financial`,
:mod:`~banditroute.privacy.national_ids` and :mod:`~banditroute.privacy.contact`.
"""

from banditroute.privacy.financial import IBAN_LENGTHS, iban_valid, luhn_valid
from banditroute.privacy.findings import (
    CARD,
    DATA_CLASSES,
    EMAIL,
    IBAN,
    KINDS,
    NATIONAL_ID,
    PERSONAL_KINDS,
    PHONE,
    SECRET,
    Finding,
    classify,
    most_sensitive,
    redact,
    sensitivity,
)
from banditroute.privacy.scanner import DEFAULT_MAX_CHARS, DETECTORS, scan
from banditroute.privacy.secrets import ENTROPY_THRESHOLD, MIN_SECRET_VALUE, shannon_entropy

__all__ = [
    "CARD",
    "DATA_CLASSES",
    "DEFAULT_MAX_CHARS",
    "DETECTORS",
    "EMAIL",
    "ENTROPY_THRESHOLD",
    "IBAN",
    "IBAN_LENGTHS",
    "KINDS",
    "MIN_SECRET_VALUE",
    "NATIONAL_ID",
    "PERSONAL_KINDS",
    "PHONE",
    "SECRET",
    "Finding",
    "classify",
    "iban_valid",
    "luhn_valid",
    "most_sensitive",
    "redact",
    "scan",
    "sensitivity",
    "shannon_entropy",
]
