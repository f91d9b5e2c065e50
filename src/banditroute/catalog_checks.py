"""Warnings about a catalogue that will refuse requests it is bound to receive.

The privacy scan marks every prompt holding personal data (an e-mail address, a phone number,
...) as ``pii``, and a model receives it only if its ``[[models]]`` entry lists ``pii`` in
``data_classes``, which a custom entry does not unless told. A catalogue where no model does
refuses all such prompts with FAILED_PRECONDITION; the server says so when it starts and when a
reload installs such a catalogue, instead of leaving users to find out from refusals.
"""

from __future__ import annotations

import structlog

from banditroute.catalog import Catalog

log = structlog.get_logger(__name__)

DETECTED_CLASSES: tuple[str, ...] = ("pii",)
"""Data classes the privacy scan gives ordinary prompts and some model should accept (``secret``
is left out: by default nothing accepts secrets, on purpose)."""


def unserved_data_classes(catalog: Catalog) -> tuple[str, ...]:
    """The classes of :data:`DETECTED_CLASSES` that no model of ``catalog`` accepts."""
    return tuple(c for c in DETECTED_CLASSES if not any(c in m.data_classes for m in catalog))


def warn_unserved_data_classes(catalog: Catalog) -> None:
    """Log ``no_model_accepts_data_class`` for each class no model accepts, naming the key."""
    for data_class in unserved_data_classes(catalog):
        log.warning(
            "no_model_accepts_data_class",
            data_class=data_class,
            effect=f"every {data_class} request (e.g. a prompt with an e-mail address) is "
            "refused with FAILED_PRECONDITION",
            fix=f'list "{data_class}" in data_classes of the [[models]] entries that may '
            f'receive it, e.g. data_classes = ["public", "internal", "{data_class}"]',
        )
