"""scan(): every detector over the window, keeping the more specific of overlapping finds."""

from __future__ import annotations

from banditroute.privacy import contact, financial, national_ids, secrets
from banditroute.privacy.findings import Finding, redact
from banditroute.privacy.index import Detector, index_text

DEFAULT_MAX_CHARS = 200_000
"""How many characters :func:`scan` reads by default (about 50k tokens: most prompts whole)."""

_DETECTORS: tuple[tuple[str, str, Detector], ...] = (
    # Secrets first: where detections overlap, the earlier detector wins.
    *secrets.DETECTORS,
    *financial.DETECTORS,
    *national_ids.DETECTORS,
    *contact.DETECTORS,
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
    where = index_text(text[:max_chars])
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
