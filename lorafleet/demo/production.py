"""The demo's production distribution: wider than the first training set.

The first adapter (v1) trains on the python LoRA families of shared/synthetic.py with
K in 2..25. Production asks for more:
- new combinations: the PRODUCTION_TYPES families (sum *times* K, largest one *plus* K,
  ...), whose statements reuse the LoRA families' words, so v1 is partly right;
- new parameter ranges: the LoRA families with K in 26..40.

Every (family, K) pair is one problem. A fixed share of the pairs is the held-out slice:
never sent as traffic, and a held-out problem that ingest's own dedup (NearDuplicates with
the ingest defaults) would call a near-duplicate of any traffic or first-run training
problem is dropped from it, so what the slice measures was never trained on, even nearly.
Pure: no I/O, deterministic.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from lorafleet.shared import synthetic
from lorafleet.shared.problems import Problem

HELDOUT_SHARE = 0.25  # of the production pairs; the rest is traffic


@dataclass(frozen=True)
class ProductionSplit:
    traffic: list[Problem]
    heldout: list[Problem]
    dropped_near_duplicates: list[str]  # held-out ids removed by the dedup


def production_pairs(domain: str = "python") -> list[tuple[str, int]]:
    first_ks = set(synthetic.K_VALUES)
    new_ranges = [(f, k) for f in synthetic.lora_types(domain) for k in synthetic.PRODUCTION_K_VALUES if k not in first_ks]
    new_families = [(f, k) for f in synthetic.PRODUCTION_TYPES if synthetic.FAMILIES[f].domain == domain
                    for k in synthetic.PRODUCTION_K_VALUES]
    return new_families + new_ranges


def is_heldout_pair(family: str, k: int, share: float = HELDOUT_SHARE) -> bool:
    # A hash, not a stride: every family gets held-out constants spread over the whole range.
    return zlib.crc32(f"{family}/{k}".encode()) % 1000 < share * 1000


def exclude_near_duplicates(candidates: list[Problem], others: list[Problem]) -> tuple[list[Problem], list[Problem]]:
    """(kept, dropped): a candidate is dropped when ingest's dedup, with its default settings,
    calls its statement a near-duplicate of any of `others`."""
    from lorafleet.services.ingest.dedup import NearDuplicates
    from lorafleet.shared.config import DedupSection

    cfg = DedupSection()  # ingest's defaults: the same rule that decides what a retrain sees
    index = NearDuplicates(cfg.threshold, cfg.num_perm, cfg.number_agreement)
    for p in others:
        index.add(p.id, index.signature(p.statement))
    kept, dropped = [], []
    for p in candidates:
        (dropped if index.matches(index.signature(p.statement)) else kept).append(p)
    return kept, dropped


def split_production(domain: str = "python", share: float = HELDOUT_SHARE) -> ProductionSplit:
    problems = [synthetic.make_problem(f, k) for f, k in production_pairs(domain)]
    traffic = [p for p in problems if not is_heldout_pair(p.meta["family"], p.meta["k"], share)]
    candidates = [p for p in problems if is_heldout_pair(p.meta["family"], p.meta["k"], share)]
    heldout, dropped = exclude_near_duplicates(candidates, [*traffic, *synthetic.lora_problems(domain, "train")])
    return ProductionSplit(traffic=traffic, heldout=heldout, dropped_near_duplicates=[p.id for p in dropped])
