"""Carry a cost-aware policy's learned posterior across a change in how many embedding
components it reads (the semantic features turned on or off), so that the restart after such a
change keeps what every model learned instead of setting the snapshot aside and starting afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float64]
Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class BlockLayout:
    """The weights of a cost-aware policy: ``blocks`` blocks (the shared one, then one per
    model), each ``dense`` numeric weights, ``semantic`` embedding weights, then ``tail`` more
    (the price column of the price prior)."""

    blocks: int
    dense: int
    semantic: int
    tail: int

    @property
    def width(self) -> int:
        """Weights per block."""
        return self.dense + self.semantic + self.tail

    def positions(self, semantic: int) -> npt.NDArray[np.int64]:
        """Indices, in the whole weight vector, of the dense weights, the first ``semantic``
        embedding weights and the tail, block by block."""
        within = np.r_[
            np.arange(self.dense + semantic), np.arange(self.width - self.tail, self.width)
        ]
        starts = np.arange(self.blocks) * self.width
        indices: npt.NDArray[np.int64] = (starts[:, None] + within[None, :]).ravel()
        return indices


def carry_posterior(
    covariance: Matrix, mean: Vector, old: BlockLayout, new: BlockLayout, prior: Vector
) -> tuple[Matrix, Vector]:
    """The posterior of ``old`` (covariance and mean) in layout ``new``, which differs from it
    in its number of embedding weights only. Weights both read keep their joint posterior;
    weights only ``new`` reads get the prior (mean 0, variance ``prior`` at their place in
    ``new``, uncorrelated with the rest), the posterior had every past prompt's embedding been
    zero there (exactly so for a model that never drifted); weights only ``old`` read are
    marginalised out (a Gaussian's marginal: their rows and columns dropped)."""
    if (old.blocks, old.dense, old.tail) != (new.blocks, new.dense, new.tail):
        raise ValueError("only the number of embedding weights may differ")
    size = old.blocks * old.width
    if covariance.shape != (size, size) or mean.shape != (size,):
        raise ValueError(f"covariance and mean do not have {size} weights")
    if prior.shape != (new.blocks * new.width,):
        raise ValueError("prior: one variance per weight of the new layout")
    kept = min(old.semantic, new.semantic)
    source, target = old.positions(kept), new.positions(kept)
    carried = np.diag(prior).astype(np.float64)
    carried[np.ix_(target, target)] = covariance[np.ix_(source, source)]
    centre = np.zeros(len(prior))
    centre[target] = mean[source]
    return carried, centre
