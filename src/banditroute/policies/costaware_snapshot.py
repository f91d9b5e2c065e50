"""Read a cost-aware policy's snapshot (the arrays :meth:`CostAwarePolicy.save` writes) and
check every value before the policy takes any of it: a snapshot is a file a crafted or damaged
copy can replace, and a half-restored policy, or one whose state breaks every Route later, is
worse than a refused snapshot."""

from __future__ import annotations

import io
import json
import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt


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


def _invalid(what: str) -> ValueError:
    return ValueError(what)  # restore says whose: "not a valid costaware snapshot: ..."


def _numbers(
    value: Any, what: str, shape: tuple[int, ...] | None = None
) -> npt.NDArray[np.float64]:
    """A snapshot's array as finite float64 values (of ``shape`` when given), or a
    ValueError: strings, complex numbers, NaN or infinities are refused, not converted."""
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise _invalid(f"{what} holds {array.dtype} values")
    out = array.astype(np.float64)
    if shape is not None:
        if out.size != int(np.prod(shape)):
            raise _invalid(f"{what} has {out.size} values, not {int(np.prod(shape))}")
        out = out.reshape(shape)
    if not np.isfinite(out).all():
        raise _invalid(f"{what} holds values that are not finite")
    return out


def read_snapshot(data: bytes) -> SnapshotState:
    """Read and check a snapshot, raising on anything malformed (whatever numpy or json
    raise: :meth:`CostAwarePolicy.restore` turns every error into a ValueError). Older
    snapshots lack some entries: the exploration clock's credit, drifts, born times and prices
    (then 0), and the layout markers."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        if str(archive["kind"]) != "costaware":
            raise _invalid("another policy's state")
        raw_slots = json.loads(str(archive["slots"]))
        raw_drifts = json.loads(str(archive["drifts"])) if "drifts" in archive else {}
        if not isinstance(raw_slots, dict) or not isinstance(raw_drifts, dict):
            raise _invalid("slots and drifts must be objects")
        slots = {str(k): v for k, v in raw_slots.items()}
        models = len(slots)
        if sorted(v for v in slots.values() if type(v) is int) != list(range(models)):
            raise _invalid("model slots must number the models 0, 1, ... once each")
        drifts = {str(k): v for k, v in raw_drifts.items()}
        if any(type(v) is not int or v < 0 for v in drifts.values()):
            raise _invalid("drift counts must be non-negative integers")
        covariance = _numbers(archive["cov"], "the covariance")
        mean = _numbers(archive["mean"], "the mean")
        if mean.ndim != 1 or covariance.shape != (len(mean), len(mean)):
            raise _invalid("wrong shapes")
        if not np.allclose(covariance, covariance.T) or (np.diag(covariance) < 0).any():
            raise _invalid("the covariance is not symmetric with a non-negative diagonal")
        zeros = np.zeros(models)
        updates = int(archive["updates"])
        credit = float(archive["logged_credit"]) if "logged_credit" in archive else 0.0
        if updates < 0 or not (math.isfinite(credit) and credit >= 0):
            raise _invalid("update counts must be finite and non-negative")
        return SnapshotState(
            slots=slots,
            covariance=covariance,
            mean=mean,
            sse=_numbers(archive["sse"], "sse", (models,)),
            counts=_numbers(archive["count"], "count", (models,)),
            born=_numbers(archive.get("born", zeros), "born", (models,)),
            price=_numbers(archive.get("arm_price", zeros), "prices", (models,)),
            updates=updates,
            credit=credit,
            drifts=drifts,
            widths={k: int(archive[k]) for k in ("semantic_dims", "priced") if k in archive},
        )
