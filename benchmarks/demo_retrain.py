"""Offline check of the demo's production loop (issue 18), without the bus: does a retrain on
v1's verified production successes beat v1 on the held-out production slice?

  ingest (demo config) -> train v1 -> v1 answers production traffic problems (sampled, the
  sandbox judges, the collector's selection rule and dedup) -> pool JSONL -> ingest with the
  pool as a `production` source -> train v2 -> pass@1 of base, v1, v2 on the held-out slice.

The same code the services run (ingest's build_dataset, the trainer's train, the
evaluator's run_evaluation + sandbox judge); only the transport is left out.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/demo_retrain.py [--work DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("benchmarks/out/demo-retrain"),
                    help="datasets, adapters, the pool and result.json (trained adapters are reused)")
    ap.add_argument("--config", type=Path, default=Path("configs/demo_python_lora.yaml"))
    ap.add_argument("--requests", type=int, default=300, help="production requests v1 answers")
    ap.add_argument("--temperature", type=float, default=0.8, help="sampling temperature of the production requests and of the slice's measurement")
    ap.add_argument("--seed", type=int, default=0, help="which traffic v1 sees (the requests and their sampling)")
    ap.add_argument("--pool-limit", type=int, default=40,
                    help="the collector's retrain threshold: v2 trains on the first this many pool entries")
    ap.add_argument("--samples", type=int, default=5, help="samples per held-out problem when measuring the slice")
    args = ap.parse_args()
    asyncio.run(run(args))


async def run(args) -> None:
    from lorafleet.demo.measure import improved, measure_slice, slice_report
    from lorafleet.demo.production import split_production
    from lorafleet.services.evaluator.backends.transformers import TransformersBackend
    from lorafleet.services.evaluator.evaluate import build_request
    from lorafleet.services.evaluator.judging import make_judge
    from lorafleet.services.evaluator.models import SamplingParams
    from lorafleet.services.ingest.pipeline import build_dataset
    from lorafleet.services.ingest.verify import sandbox_judge
    from lorafleet.services.registry.collector import pool_key, select
    from lorafleet.services.registry.settings import RegistrySettings
    from lorafleet.services.trainer.tiny_model import resolve_base_model
    from lorafleet.services.trainer.train import TrainJob, train
    from lorafleet.shared.config import SourceSection, load_config
    from lorafleet.shared.events import ProductionOutcome
    from lorafleet.shared.prompts import extract_code

    times: dict[str, float] = {}
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config)
    t = time.monotonic()
    base = resolve_base_model(cfg.base_model)
    times["base"] = time.monotonic() - t
    split = split_production()
    print(f"production: {len(split.traffic)} traffic problems, {len(split.heldout)} held out "
          f"({len(split.dropped_near_duplicates)} dropped as near-duplicates)", flush=True)

    def train_version(name: str, extra: list, reuse: bool) -> Path:
        import shutil

        t = time.monotonic()
        report = build_dataset(cfg.data, judge=sandbox_judge(), out_dir=work / f"ds-{name}", extra_sources=extra)
        times[f"ingest {name}"] = time.monotonic() - t
        print(f"ingest {name}: train {report['train']} eval {report['eval']} "
              f"dup removed {report.get('duplicates_removed')}", flush=True)
        t = time.monotonic()
        out = work / f"adapter-{name}"
        if not reuse:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(work / f"ckpt-{name}", ignore_errors=True)
        if not (out / "adapter_config.json").is_file():
            train(TrainJob(config=cfg, dataset_dir=work / f"ds-{name}", output_dir=out, checkpoint_dir=work / f"ckpt-{name}"))
        times[f"train {name}"] = time.monotonic() - t
        print(f"train {name}: {times[f'train {name}']:.0f}s", flush=True)
        return out

    v1 = train_version("v1", [], reuse=True)  # v1 depends only on the config: kept between runs

    # v1 serves production traffic: sampled answers, judged, the collector's rule.
    t = time.monotonic()
    rng = random.Random(args.seed)
    asked = [rng.choice(split.traffic) for _ in range(args.requests)]
    backend = TransformersBackend(base, v1, batch_size=16)
    params = SamplingParams(n=1, temperature=args.temperature, max_new_tokens=64, seed=0)
    reqs = [build_request(p, seed=args.seed * 100_003 + i) for i, p in enumerate(asked)]
    reqs = [r.model_copy(update={"problem_id": f"{r.problem_id}#{i}"}) for i, r in enumerate(reqs)]
    gens = await backend.generate(reqs, "adapter", params)
    await backend.aclose()
    judge = make_judge()
    codes = [extract_code(g.texts[0]) or "" for g in gens]
    verdicts = await judge(list(zip(codes, asked)))
    settings = RegistrySettings()
    pool: dict[str, object] = {}
    per_problem: dict[str, int] = {}
    successes = 0
    for p, code, j in zip(asked, codes, verdicts):
        ok = j.verdict == "passed"
        successes += ok
        outcome = ProductionOutcome(request_id=f"offline-{len(pool)}-{successes}", adapter_name=cfg.adapter_name,
                                    version=1, request_key="offline", success=ok,
                                    confidence=1 - 2 ** -len(p.tests) if ok else 1.0, latency_ms=1.0,
                                    problem=p.statement, solution=code or None,
                                    tests=[c.model_dump(exclude_none=True) for c in p.tests])
        problem, _ = select(outcome, settings)
        if problem is None:
            continue
        key = pool_key(cfg.adapter_name, p.statement, code)
        prefix = key.rsplit(".", 1)[0]
        if key in pool or per_problem.get(prefix, 0) >= settings.max_solutions_per_problem:
            continue
        if len(pool) >= args.pool_limit:  # the retrain was requested at this point
            continue
        per_problem[prefix] = per_problem.get(prefix, 0) + 1
        pool[key] = problem
    times["traffic v1"] = time.monotonic() - t
    pool_path = work / "pool.jsonl"
    pool_path.write_text("".join(p.model_dump_json() + "\n" for p in pool.values()))
    fams: dict[str, list[int]] = {}
    for p, j in zip(asked, verdicts):
        fams.setdefault(p.meta["family"] + ("" if p.meta["k"] <= 25 else ">25"), [0, 0])
        fams[p.meta["family"] + ("" if p.meta["k"] <= 25 else ">25")][0] += 1
        fams[p.meta["family"] + ("" if p.meta["k"] <= 25 else ">25")][1] += j.verdict == "passed"
    print(f"traffic: {args.requests} requests to v1, {successes} successes, pool {len(pool)} "
          f"({len(per_problem)} problems); per family {json.dumps(fams)}", flush=True)

    v2 = train_version("v2", [SourceSection(type="production", path=str(pool_path))], reuse=False)

    t = time.monotonic()
    scores = await measure_slice(base, {"v1": v1, "v2": v2}, split.heldout, n=args.samples,
                                temperature=args.temperature)
    times["measure slice"] = time.monotonic() - t
    report = slice_report(scores)
    result = {"slice": report, "improved": improved(report), "times_s": {k: round(v, 1) for k, v in times.items()},
              "requests": args.requests, "successes": successes, "pool": len(pool),
              "heldout": len(split.heldout), "traffic_problems": len(split.traffic)}
    (work / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
