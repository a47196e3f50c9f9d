"""Unbiased pass@k (Chen et al. 2021): with n samples of which c are correct,
pass@k = 1 - C(n-c, k) / C(n, k), averaged over problems.

"First of k attempts passed" is a single draw of that probability and biased for
small n; this estimator is exact in expectation for any n >= k.
"""

from __future__ import annotations

from collections.abc import Iterable


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k)/C(n, k), computed as a product so large n never overflows."""
    if not 0 <= c <= n:
        raise ValueError(f"correct count c={c} must be between 0 and n={n}")
    if k < 1 or k > n:
        raise ValueError(f"k={k} must be between 1 and n={n}: unbiased pass@k needs n >= k samples")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float | None:
    """Mean of pass_at_k over (n, c) per problem; None when there are no problems."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    return sum(values) / len(values) if values else None
