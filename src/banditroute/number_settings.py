"""``KIND:KEY=NUMBER,...`` settings in a policy name, as replay candidates and simulator policies
take them (``linucb:alpha=0.3``, ``costaware:drift_delta=0``): parsed in one place."""

from __future__ import annotations

from collections.abc import Sequence

from banditroute.errors import BanditrouteError


def parse_number_settings(
    text: str,
    body: str,
    keys: Sequence[str],
    *,
    kind: str,
    arg: str,
    error: type[BanditrouteError],
) -> dict[str, float]:
    """The numbers of ``body`` (``KEY=NUMBER`` parts, comma-separated) by key; ``error`` naming
    ``arg`` and quoting ``text`` for an unknown key, a part without ``=`` or a non-number."""
    settings: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in keys:
            raise error(
                f"{arg}: {text!r}: expected {kind}:KEY=NUMBER,... with KEY in "
                f"{', '.join(keys)}, got {part!r}",
                field=arg,
            )
        try:
            settings[key] = float(value)
        except ValueError:
            raise error(f"{arg}: {text!r}: {key}={value!r} is not a number", field=arg) from None
    return settings
