"""The parameterised stdin problem families of `shared/synthetic.py` (the tiny-model
demo data): train-role sources get the LoRA families' training pairs, validation-role
sources the held-out (family, K) pairs, for the config's domains that have families."""

from __future__ import annotations

from typing import Iterator

from lorafleet.shared.problems import Problem

NAME = "synthetic"


def problems(role: str, domains: list[str]) -> Iterator[Problem]:
    from lorafleet.shared import synthetic

    families = {synthetic.FAMILIES[name].domain for name in synthetic.LORA_TYPES}
    for domain in [d for d in domains if d in families] or sorted(families):
        yield from synthetic.lora_problems(domain, "heldout" if role == "validation" else "train")
