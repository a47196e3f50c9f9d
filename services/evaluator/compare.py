"""Paired comparison of two models on the same problems: the mean difference of a
per-problem score with a percentile bootstrap confidence interval, resampling
problems (the unit that varies between evaluations), not samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel


class PairedDelta(BaseModel):
    mean: float
    low: float
    high: float
    confidence: float
    problems: int
    resamples: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    base: Sequence[float],
    adapter: Sequence[float],
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDelta:
    """Δ = mean(adapter - base) with a percentile bootstrap CI over problems."""
    if len(base) != len(adapter):
        raise ValueError(f"paired comparison needs the same problems: {len(base)} base vs {len(adapter)} adapter scores")
    if len(base) == 0:
        raise ValueError("paired comparison needs at least one problem")
    diff = np.asarray(adapter, dtype=float) - np.asarray(base, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return PairedDelta(
        mean=float(diff.mean()), low=float(low), high=float(high),
        confidence=confidence, problems=len(diff), resamples=resamples,
    )
