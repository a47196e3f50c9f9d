"""SIMULATED production traffic, for the demo only: it stands in for a serving fleet.

Each simulated request asks the registry's router which arm serves it (the
real request-reply on ROUTE_SUBJECT, so the A/B split is the registry's own),
then draws the request's success from that arm's *measured* pass@1 (the
evaluator's sampled pass@1 of that version on held-out problems; version 0 =
the base model) and publishes a `production.outcome`. A successful request
carries the problem (a training-family synthetic problem, never a held-out
pair), its tests and the reference solution as the served code, which is what
the collector pools for the retrain.

Nothing here is a measurement: the outcomes are as good as the pass@1 they are
drawn from. Everything it publishes has request keys starting with `sim-`.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from lorafleet.shared.bus import publish_event
from lorafleet.shared.events import ProductionOutcome
from lorafleet.shared.synthetic import K_VALUES, is_held_out, lora_types, make_problem

LABEL = "SIMULATED traffic"


def simulated_outcome(
    rng: random.Random, *, adapter_name: str, version: int, rate: float, request_key: str, run_id: str,
    domain: str = "python",
) -> ProductionOutcome:
    """One simulated request served by `version`: success ~ Bernoulli(rate). Pure given `rng`."""
    family = rng.choice(lora_types(domain))
    k = rng.choice([k for k in K_VALUES if not is_held_out(family, k)])
    problem = make_problem(family, k, c=rng.randint(1, 9))
    success = rng.random() < rate
    return ProductionOutcome(
        request_id=f"{run_id}:{request_key}",
        adapter_name=adapter_name,
        version=version,
        request_key=request_key,
        success=success,
        confidence=rng.uniform(0.92, 0.99) if success else rng.uniform(0.1, 0.6),
        latency_ms=max(1.0, rng.gauss(40.0, 5.0)),
        problem=problem.statement,
        solution=problem.solutions[0] if success else None,
        tests=[t.model_dump(exclude_none=True) for t in problem.tests] if success else None,
    )


@dataclass
class TrafficSimulator:
    """Publishes simulated outcomes until stopped. `rates`: version -> measured pass@1 (0 = base)."""

    nc: object
    js: object
    adapter_name: str
    rates: dict[int, float]
    run_id: str = "sim"
    seed: int = 0
    requests_per_s: float = 100.0
    publish_timeout_s: float = 5.0
    sent: int = 0
    by_arm: dict[str, list[int]] = field(default_factory=dict)  # arm -> [requests, successes]

    async def run(self, stop: asyncio.Event, max_requests: int = 100_000) -> None:
        from lorafleet.services.registry.routing import request_route

        rng = random.Random(self.seed)
        while not stop.is_set() and self.sent < max_requests:
            key = f"sim-{self.run_id}-{self.sent}"
            try:
                target = await request_route(self.nc, self.adapter_name, key)
            except Exception:  # router not ready / adapter not registered yet: try again shortly
                await asyncio.sleep(0.5)
                continue
            rate = self.rates.get(target.version)
            if rate is None:  # a version we have no measurement for: skip rather than invent one
                await asyncio.sleep(0.2)
                continue
            outcome = simulated_outcome(rng, adapter_name=self.adapter_name, version=target.version, rate=rate,
                                        request_key=key, run_id=self.run_id)
            await publish_event(self.js, outcome, timeout=self.publish_timeout_s)
            arm = self.by_arm.setdefault(f"{target.arm} v{target.version}", [0, 0])
            arm[0] += 1
            arm[1] += int(outcome.success)
            self.sent += 1
            await asyncio.sleep(1.0 / self.requests_per_s)
