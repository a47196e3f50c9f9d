"""LiveCodeBench's side of benchmarks/judge_vs_lcb.py: run by the interpreter of the venv that holds
`nvidia-livecodebench` (not the project's: none of lorafleet is imported here).

    python _lcb_worker.py PAIRS.json RESULTS.json WORKERS

PAIRS.json: [{"sample": {"input_output": ...}, "code": ..., "timeout": int}, ...]. The pairs are judged
by LCB's own batch runner, `evaluate_generations` (a process pool over the pairs; per pair,
`check_correctness` starts a fresh process that calls `reliability_guard` and `run_test`), one call per
timeout value. RESULTS.json: {"results": [[per-test result, ...], ...], "metadata": [...], "seconds": s}
in the order of PAIRS.json. The judged programs' own output goes to this process's stdout, so results
go to a file.
"""

from __future__ import annotations

import json
import sys
import time

from livecodebench.evaluation.compute_code_generation_metrics import evaluate_generations


def _plain(x):
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item"):  # numpy bools and ints in LCB's result lists
        return x.item()
    return x


def main(pairs_path: str, results_path: str, workers: int) -> None:
    with open(pairs_path) as f:
        pairs = json.load(f)
    results: list = [None] * len(pairs)
    metadata: list = [None] * len(pairs)
    t0 = time.perf_counter()
    for timeout in sorted({p["timeout"] for p in pairs}):
        idx = [i for i, p in enumerate(pairs) if p["timeout"] == timeout]
        res, meta = evaluate_generations([pairs[i]["sample"] for i in idx], [[pairs[i]["code"]] for i in idx],
                                         debug=False, num_process_evaluate=workers, timeout=timeout)
        for k, i in enumerate(idx):
            results[i] = _plain(res[k][0])
            metadata[i] = {key: str(v) for key, v in dict(meta[k][0]).items()}
    seconds = time.perf_counter() - t0
    with open(results_path, "w") as f:
        json.dump({"results": results, "metadata": metadata, "seconds": seconds}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
