"""A/B decision benchmark: error rates and sample sizes of the registry's sequential test under continuous
monitoring, next to the fixed-level z-test it replaced (the baseline, measured in the same run on the same
simulated paths' distribution).

Part 1 (issue 16's figures, vectorised with numpy): a look every 10 outcomes per arm, up to 5,000 per arm,
1,000 runs per case: A/A at 0.5 and 0.1, +5 and -5 points; median outcomes per arm at the decision next to
the per-arm size a fixed-horizon test needs (two-sided alpha, 90% power).
Part 2 (`abtest.evaluate` itself, look by look): guardrails and the sample-ratio check, a 50% split,
20 outcomes between looks, up to 10,000 outcomes per run.

    PYTHONPATH=. .venv/bin/python benchmarks/abtest.py [--runs 1000] [--looks-runs 1000]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from lorafleet.services.registry import abtest
from lorafleet.services.registry.abtest_sim import PROMOTE, ROLLBACK, simulate, simulate_looks, simulate_peeking_z


def mc(rate: float, runs: int) -> str:
    return f"{rate:.3f} ± {1.96 * math.sqrt(max(rate * (1 - rate), 1e-12) / runs):.3f}"


def part1(runs: int) -> None:
    alpha = abtest.ALPHA
    print(f"== Part 1: success test alone, {runs} runs per case, look every 10/arm, max 5000/arm, alpha {alpha}, "
          f"tau {abtest.TAU}, min_samples {abtest.MIN_SAMPLES}")
    print(f"{'case':<22} {'promote':>15} {'rollback':>15} {'median n/arm':>13} {'fixed-horizon n':>16}")
    for label, pc, pk, seed in (("A/A 0.50", 0.5, 0.5, 11), ("A/A 0.10", 0.1, 0.1, 12)):
        seq = simulate(pc, pk, runs=runs, seed=seed)
        old = simulate_peeking_z(pc, pk, runs=runs, seed=seed)
        print(f"{label + ' sequential':<22} {mc(seq.rate(PROMOTE), runs):>15} {mc(seq.rate(ROLLBACK), runs):>15}"
              f"   false decisions {mc(seq.false_rate, runs)} (bound {alpha} + MC error: <= 0.065)")
        print(f"{label + ' old z, peeking':<22} {mc(old.rate(PROMOTE), runs):>15} {mc(old.rate(ROLLBACK), runs):>15}"
              f"   false decisions {mc(old.false_rate, runs)}  -> sequential/old = "
              f"{seq.false_rate / old.false_rate:.3f}")
    for label, pc, pk, code, seed in (("+5 pts (0.55 v 0.50)", 0.55, 0.5, PROMOTE, 13),
                                      ("-5 pts (0.45 v 0.50)", 0.45, 0.5, ROLLBACK, 14),
                                      ("+10 pts (0.60 v 0.50)", 0.6, 0.5, PROMOTE, 15),
                                      ("+3 pts (0.53 v 0.50)", 0.53, 0.5, PROMOTE, 16),
                                      ("+2 pts (0.12 v 0.10)", 0.12, 0.1, PROMOTE, 17)):
        seq = simulate(pc, pk, runs=runs, seed=seed)
        fixed = abtest.fixed_horizon_n(pk, pc - pk)
        med = seq.median_n(code)
        print(f"{label:<22} {mc(seq.rate(PROMOTE), runs):>15} {mc(seq.rate(ROLLBACK), runs):>15} "
              f"{med if med is not None else '-':>13} {fixed:>16}"
              + (f"   median/fixed = {med / fixed:.2f}" if med is not None else ""))
    print("mixing sd tau: +5 pts power and median n/arm; A/A 0.5 and 0.1 false decisions")
    for tau in (0.02, 0.03, 0.05, 0.08, 0.12):
        up = simulate(0.55, 0.5, runs=runs, tau=tau, seed=21)
        aa5 = simulate(0.5, 0.5, runs=runs, tau=tau, seed=22)
        aa1 = simulate(0.1, 0.1, runs=runs, tau=tau, seed=23)
        small = simulate(0.53, 0.5, runs=runs, tau=tau, seed=24)
        big = simulate(0.6, 0.5, runs=runs, tau=tau, seed=25)
        print(f"  tau {tau:<5} +5: {up.rate(PROMOTE):.3f} median {up.median_n(PROMOTE)}   +3: {small.rate(PROMOTE):.3f} "
              f"median {small.median_n(PROMOTE)}   +10: median {big.median_n(PROMOTE)}   "
              f"A/A: {aa5.false_rate:.3f} / {aa1.false_rate:.3f}")


def part2(runs: int) -> None:
    print(f"== Part 2: abtest.evaluate look by look (guardrails + SRM), {runs} runs per case, 50% split, "
          "20 outcomes per look, up to 10,000 per run")
    cases = [
        ("A/A, errors 2% both, same latency", dict(p_candidate=0.5, p_control=0.5, error_candidate=0.02,
                                                    error_control=0.02)),
        ("errors 5% v 2%, success equal", dict(p_candidate=0.5, p_control=0.5, error_candidate=0.05,
                                                error_control=0.02)),
        ("latency x1.5 (limit 1.2), success equal", dict(p_candidate=0.5, p_control=0.5,
                                                          latency_candidate=(4.0 + math.log(1.5), 0.5))),
        ("latency x1.1 (limit 1.2), +5 pts", dict(p_candidate=0.55, p_control=0.5,
                                                   latency_candidate=(4.0 + math.log(1.1), 0.5))),
        ("+5 pts, healthy split", dict(p_candidate=0.55, p_control=0.5)),
        ("+5 pts, healthy split, split_robust off", dict(p_candidate=0.55, p_control=0.5, split_robust=False)),
        ("broken router: 45% sent, 50% configured", dict(p_candidate=0.5, p_control=0.5, observed_share=0.45)),
        ("biased publisher: 30% of cand. failures lost", dict(p_candidate=0.5, p_control=0.5,
                                                              drop_candidate_failures=0.3)),
        ("  the same, split_robust off", dict(p_candidate=0.5, p_control=0.5, drop_candidate_failures=0.3,
                                              split_robust=False)),
        ("biased publisher: 10% lost", dict(p_candidate=0.5, p_control=0.5, drop_candidate_failures=0.1)),
    ]
    print(f"{'case':<46} {'promote':>7} {'rollback':>8} {'(guard)':>7} {'srm':>6} {'none':>6} {'median n/arm':>12}")
    for i, (label, kw) in enumerate(cases):
        rng = np.random.default_rng(100 + i)
        t0 = time.perf_counter()
        res = [simulate_looks(rng, **kw) for _ in range(runs)]
        counts = {k: sum(r.decision == k and not r.srm for r in res) / runs for k in ("promote", "rollback", "none")}
        guard = sum(r.decision == "rollback" and r.guardrail is not None for r in res) / runs
        srm = sum(r.srm for r in res) / runs
        decided = [min(r.candidate_n, r.control_n) for r in res if r.decision != "none"]
        med = f"{np.median(decided):.0f}" if decided else "-"
        print(f"{label:<46} {counts['promote']:>7.3f} {counts['rollback']:>8.3f} {guard:>7.3f} {srm:>6.3f} "
              f"{counts['none']:>6.3f} {med:>12}   ({time.perf_counter() - t0:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000, help="runs per case, part 1")
    ap.add_argument("--looks-runs", type=int, default=1000, help="runs per case, part 2")
    args = ap.parse_args()
    t0 = time.perf_counter()
    part1(args.runs)
    print(f"(part 1: {time.perf_counter() - t0:.1f} s)")
    t1 = time.perf_counter()
    part2(args.looks_runs)
    print(f"(part 2: {time.perf_counter() - t1:.1f} s; total {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
