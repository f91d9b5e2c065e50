"""The cost-aware policy's posterior covariance: a block shared by every model and one per model.

Each update is a rank-one change of the whole ``(1 + K) d x (1 + K) d`` matrix; applied one at
a time it cost more than the rest of a Feedback (with semantic features, d = 33 and 11 models,
157,000 entries per update), and reading each model's blocks back out of it was most of a
Route's policy time. So this keeps two things:

* the dense matrix with its updates queued: an update reads the columns it needs from the
  matrix, corrected for the queued updates, and every :data:`FLUSH_EVERY` updates (or when the
  dense matrix is asked for) they are applied together as one matrix product, on one BLAS
  thread (OpenBLAS's threads made that product 25 times slower on a busy two-core machine);
* each model's combined block ``C_ss + C_sa + C_as + C_aa`` (a model's design row is the
  features in the shared block and in its own), updated by the same rank-one terms at
  ``O(K d^2)``, so a Route's variances ``x' M_a x`` are one matrix-vector product.

Both give the covariance a one-at-a-time update gives, up to floating-point rounding.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

FLUSH_EVERY = 32
"""Updates queued before they are applied to the dense matrix in one product."""


@functools.cache
def _blas() -> Any:
    """The process's BLAS thread pools (found once: looking them up takes milliseconds)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


class BlockCovariance:
    """Posterior covariance over a shared block and one block per model, ``dim`` features each."""

    def __init__(self, dim: int, shared_prior: npt.NDArray[np.float64]) -> None:
        self.dim = dim
        self._dense = np.diag(shared_prior)
        self._queued = 0
        self._queue_reset()
        self._rebuild_combined()

    @property
    def models(self) -> int:
        """Model blocks beside the shared one."""
        return int(self._dense.shape[0]) // self.dim - 1

    def dense(self) -> npt.NDArray[np.float64]:
        """The whole matrix, every queued update applied (read it; change it only through
        this object's methods, which keep the combined blocks in step)."""
        self._flush()
        return self._dense

    def replace(self, matrix: npt.NDArray[np.float64]) -> None:
        """Take ``matrix`` (a restored snapshot's) as the covariance."""
        self._dense = np.array(matrix, dtype=np.float64, order="C")
        self._queue_reset()
        self._rebuild_combined()

    def grow(self, prior: npt.NDArray[np.float64]) -> None:
        """Add model blocks with diagonal prior covariance ``prior`` (``dim`` per new model),
        uncorrelated with everything learned so far."""
        self._flush()
        size, added = self._dense.shape[0], len(prior)
        grown = np.zeros((size + added, size + added))
        grown[:size, :size] = self._dense
        grown[size:, size:] = np.diag(prior)
        self._dense = grown
        self._queue_reset()
        self._rebuild_combined()

    def add_to_block(self, slot: int, prior: npt.NDArray[np.float64]) -> None:
        """Add the diagonal ``prior`` to model ``slot``'s own block (a drifted model's weights
        get their prior uncertainty back)."""
        self._flush()
        d = self.dim
        block = slice(d * (1 + slot), d * (2 + slot))
        self._dense[block, block] += np.diag(prior)
        self._combined[slot] += np.diag(prior)

    def variances(
        self, x: npt.NDArray[np.float64], slots: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        """``z' C z`` for each model in ``slots``, ``z`` being ``x`` in the shared block and in
        the model's own (in units of the noise variance)."""
        n, d = self.models, self.dim
        per_model = (self._combined.reshape(n * d, d) @ x).reshape(n, d) @ x
        return np.asarray(per_model[slots], dtype=np.float64)

    def row_variances(
        self, rows: npt.NDArray[np.float64], slots: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        """``z' C z`` for each model in ``slots`` with its own features ``rows[i]`` (one row per
        slot) in the shared block and in the model's own: :meth:`variances` for features that
        differ between models."""
        blocks = self._combined[slots]
        return np.asarray(np.einsum("kd,kde,ke->k", rows, blocks, rows), dtype=np.float64)

    def score_covariance(
        self, rows: npt.NDArray[np.float64], slots: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        """``Z C Z'``: the covariance between the models' values, model ``slots[i]``'s design
        row being ``rows[i]`` in the shared block and in its own (noise-variance units). Its
        diagonal is :meth:`row_variances`; off the diagonal, what the models' values share
        through the shared block. Read from the dense matrix corrected for queued updates."""
        n, d = self.models, self.dim
        size = (n + 1) * d
        own = 1 + slots
        dense = self._dense.reshape(size, n + 1, d)
        cz = dense[:, 0, :] @ rows.T + np.einsum("ikd,kd->ik", dense[:, own, :], rows)
        queued = self._queued
        if queued:
            columns = self._columns[:queued].reshape(queued, n + 1, d)
            seen = columns[:, 0, :] @ rows.T + np.einsum("qkd,kd->qk", columns[:, own, :], rows)
            cz -= self._gains[:queued].T @ seen
        blocks = cz.reshape(n + 1, d, len(slots))
        out = rows @ blocks[0] + np.einsum("ad,adb->ab", rows, blocks[own])
        return np.asarray((out + out.T) / 2.0, dtype=np.float64)

    def update(self, x: npt.NDArray[np.float64], slot: int) -> npt.NDArray[np.float64]:
        """Sherman-Morrison update of ``(prior precision + Z'Z)^-1`` for one more design row
        (``x`` in the shared block and in model ``slot``'s); returns the gain ``C z / (1 + z'
        C z)`` (with the covariance before the update), which moves the mean."""
        d = self.dim
        own = slice(d * (1 + slot), d * (2 + slot))
        cz = self._dense[:, :d] @ x + self._dense[:, own] @ x
        queued = self._queued
        if queued:
            # The queued updates, C -= sum_t g_t z_t', seen through the design row.
            columns = self._columns[:queued]
            cz -= (columns[:, :d] @ x + columns[:, own] @ x) @ self._gains[:queued]
        gain = cz / (1.0 + x @ (cz[:d] + cz[own]))
        self._gains[queued] = gain
        self._columns[queued] = cz
        self._queued = queued + 1
        # Model a's combined block changes by -(g_s + g_a)(z_s + z_a)'.
        g, z = gain.reshape(-1, d), cz.reshape(-1, d)
        self._combined -= (g[0] + g[1:])[:, :, None] * (z[0] + z[1:])[:, None, :]
        if self._queued == FLUSH_EVERY:
            self._flush()
        return gain

    def _flush(self) -> None:
        if self._queued:
            with _blas().limit(limits=1):
                self._dense -= self._gains[: self._queued].T @ self._columns[: self._queued]
            self._queued = 0

    def _queue_reset(self) -> None:
        size = self._dense.shape[0]
        self._gains = np.zeros((FLUSH_EVERY, size))
        self._columns = np.zeros((FLUSH_EVERY, size))
        self._queued = 0

    def _rebuild_combined(self) -> None:
        n, d = self.models, self.dim
        cov = self._dense.reshape(n + 1, d, n + 1, d)
        own = np.arange(1, n + 1)
        combined = (
            cov[0, :, 0, :][None] + cov[0, :, own, :] + cov[own, :, 0, :] + cov[own, :, own, :]
        )
        self._combined = np.ascontiguousarray(combined)
