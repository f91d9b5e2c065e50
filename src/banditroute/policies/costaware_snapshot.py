"""Read a cost-aware policy's snapshot (the arrays :meth:`CostAwarePolicy.save` writes) and
check every value before the policy takes any of it: a snapshot is a file a crafted or damaged
copy can replace, and a half-restored policy, or one whose state breaks every Route later, is
worse than a refused snapshot."""

from __future__ import annotations

import io
import json
import math
import zipfile
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from banditroute.snapshots import MAX_UPDATES


class SnapshotState(NamedTuple):
    """A cost-aware snapshot's content, read and checked (see :func:`read_snapshot`)."""

    slots: dict[str, int]
    covariance: npt.NDArray[np.float64]
    mean: npt.NDArray[np.float64]
    sse: npt.NDArray[np.float64]
    counts: npt.NDArray[np.float64]
    born: npt.NDArray[np.float64]
    price: npt.NDArray[np.float64]
    updates: int
    credit: float
    drifts: dict[str, int]
    widths: dict[str, int]


MAX_MAGNITUDE = 1e18
"""Largest absolute value of any weight, variance or statistic: far beyond what learning
reaches (rewards are bounded), and far enough below float64's range that products of a few of
them stay finite."""


def _numbers(
    value: Any, what: str, shape: tuple[int, ...] | None = None, *, signed: bool = True
) -> npt.NDArray[np.float64]:
    """A snapshot's array as float64 values (of ``shape`` when given) within
    :data:`MAX_MAGNITUDE` (and not negative unless ``signed``), or a ValueError: strings,
    complex numbers, NaN, infinities and absurd magnitudes are refused, not converted."""
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{what} holds {array.dtype} values")
    out = array.astype(np.float64)
    if shape is not None:
        if out.size != int(np.prod(shape)):
            raise ValueError(f"{what} has {out.size} values, not {int(np.prod(shape))}")
        out = out.reshape(shape)
    if not np.isfinite(out).all() or (np.abs(out) > MAX_MAGNITUDE).any():
        raise ValueError(f"{what} holds values that are not finite or beyond {MAX_MAGNITUDE:g}")
    if not signed and (out < 0).any():
        raise ValueError(f"{what} holds negative values")
    return out


def _stored_plainly(archive: Any, size: int) -> None:
    """Refuse an archive with a compressed member, or one larger than the ``size`` bytes of
    the whole snapshot: ``np.savez`` stores its arrays as they are, so a compressed member is
    crafted, and could unpack to gigabytes from a few kilobytes before any shape is checked."""
    for info in archive.zip.infolist():
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
            raise ValueError(f"member {info.filename[:40]!r} is compressed or larger than the file")


def _count(value: Any, what: str) -> int:
    """An update or drift count: an integer in 0..:data:`MAX_UPDATES`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UPDATES:
        raise ValueError(f"{what} must be whole numbers in 0..2**53")
    return value


def read_snapshot(data: bytes) -> SnapshotState:
    """Read and check a snapshot, raising on anything malformed (whatever numpy or json
    raise: :meth:`CostAwarePolicy.restore` turns every error into a ValueError naming the
    snapshot). Older
    snapshots lack some entries: the exploration clock's credit, drifts, born times and prices
    (then 0), and the layout markers."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        _stored_plainly(archive, len(data))
        if str(archive["kind"]) != "costaware":
            raise ValueError("another policy's state")
        raw_slots = json.loads(str(archive["slots"]))
        raw_drifts = json.loads(str(archive["drifts"])) if "drifts" in archive else {}
        if not isinstance(raw_slots, dict) or not isinstance(raw_drifts, dict):
            raise ValueError("slots and drifts must be objects")
        slots = {str(k): v for k, v in raw_slots.items()}
        models = len(slots)
        if sorted(v for v in slots.values() if type(v) is int) != list(range(models)):
            raise ValueError("model slots must number the models 0, 1, ... once each")
        drifts = {str(k): _count(v, "drift counts") for k, v in raw_drifts.items()}
        covariance = _numbers(archive["cov"], "the covariance")
        mean = _numbers(archive["mean"], "the mean")
        if mean.ndim != 1 or covariance.shape != (len(mean), len(mean)):
            raise ValueError("wrong shapes")
        if not np.allclose(covariance, covariance.T) or (np.diag(covariance) < 0).any():
            raise ValueError("the covariance is not symmetric with a non-negative diagonal")
        zeros = np.zeros(models)
        updates = _count(int(archive["updates"]), "update counts")
        credit = float(archive["logged_credit"]) if "logged_credit" in archive else 0.0
        if not (math.isfinite(credit) and 0 <= credit <= MAX_UPDATES):
            raise ValueError("the exploration clock's credit must be in 0..2**53")
        return SnapshotState(
            slots=slots,
            covariance=covariance,
            mean=mean,
            sse=_numbers(archive["sse"], "sse", (models,), signed=False),
            counts=_numbers(archive["count"], "count", (models,), signed=False),
            born=_numbers(archive.get("born", zeros), "born", (models,), signed=False),
            price=_numbers(archive.get("arm_price", zeros), "prices", (models,)),
            updates=updates,
            credit=credit,
            drifts=drifts,
            widths={k: int(archive[k]) for k in ("semantic_dims", "priced") if k in archive},
        )
