"""scan(): every detector over the window, keeping the more specific of overlapping finds."""

from __future__ import annotations

from banditroute.privacy import contact, financial, national_ids, secrets
from banditroute.privacy.findings import Finding, redact
from banditroute.privacy.index import Detector, index_text
from banditroute.privacy.normalise import normalise

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

    The window is normalised first (:func:`~banditroute.privacy.normalise.normalise`: NFKC,
    no format characters), so full-width or zero-width disguises do not hide a value.
    Findings come in text order and never overlap: where two detections overlap, the more
    specific one is kept (secrets, then IBANs, cards, national ids, e-mails, phones), so a
    card number is not also reported as a phone number. Offsets index into ``text``.
    """
    if max_chars < 0:
        raise ValueError(f"max_chars must be >= 0, got {max_chars}")
    window = text[:max_chars]
    normalised = normalise(window)
    where = index_text(normalised.text)
    accepted: list[tuple[int, int, str, str]] = []
    for kind, name, detect in _DETECTORS:
        new: list[tuple[int, int, str, str]] = []
        j = 0
        for start, end in detect(where):
            # Drop a span overlapping a finding of an earlier detector or this one's previous.
            while j < len(accepted) and accepted[j][1] <= start:
                j += 1
            if j < len(accepted) and accepted[j][0] < end:
                continue
            if new and new[-1][1] > start:
                continue
            new.append((start, end, kind, name))
        if new:
            accepted = sorted(accepted + new)
    findings: list[Finding] = []
    for found_start, found_end, kind, name in accepted:
        start, end = found_start, found_end
        if normalised.changes:
            start, end = normalised.original_start(start), normalised.original_end(end)
            if findings and findings[-1].end > start:
                continue  # two findings ending and starting inside one folded character
        findings.append(Finding(kind, start, end, redact(window[start:end]), name))
    return tuple(findings)
