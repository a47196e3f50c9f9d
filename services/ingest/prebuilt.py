"""A config's existing `train_file` / `eval_file` pair, validated, verified and used as is
(no dedup, no re-split). Lines are `TrainExample`s, or `Problem`s whose solutions are
verified in the sandbox and become examples. Examples without tests can only be
checked for valid Python syntax (counted as `syntax_only`)."""

from __future__ import annotations

import ast
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lorafleet.services.ingest.classify import classify_problem
from lorafleet.services.ingest.core import Stats, TooFewExamples, _example, _manifest
from lorafleet.services.ingest.sources.files import rows
from lorafleet.services.ingest.verify import Judge, unverified, verify_problems
from lorafleet.services.ingest.write import DatasetWriter
from lorafleet.shared.config import DataSection, SourceSection
from lorafleet.shared.errors import ConfigError
from lorafleet.shared.problems import Problem, TrainExample


def _compiles(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def build_from_files(data: DataSection, *, judge: Judge | None, out_dir: str | Path | None = None) -> dict[str, Any]:
    if not (data.train_file and data.eval_file):
        raise ConfigError("data.train_file and data.eval_file go together: set both, or neither and list `sources`")
    started = time.monotonic()
    stats = Stats(verification=data.verify.enabled)
    sides: dict[str, tuple[list[TrainExample], list[Problem]]] = {}
    for side, path in (("train", data.train_file), ("eval", data.eval_file)):
        if not Path(path).is_file():
            raise ConfigError(f"data.{side}_file: {path} not found")
        examples: list[TrainExample] = []
        problems: list[Problem] = []
        for row in rows(path):
            if not isinstance(row, dict):
                stats.malformed[row.reason] += 1
                continue
            try:
                ex = TrainExample.model_validate(row)
            except ValidationError:
                try:
                    problems.append(classify_problem(Problem.model_validate(row)))
                except ValidationError:
                    stats.malformed["neither_example_nor_problem"] += 1
                continue
            stats.problems += 1
            stats.solutions += 1
            if _compiles(ex.code):
                stats.skipped["syntax_only"] += 1
                examples.append(ex)
            else:
                stats.rejected["syntax_error"] += 1
        stats.problems += len(problems)
        stats.solutions += sum(len(p.solutions) for p in problems)
        if problems:
            if data.verify.enabled:
                results = verify_problems(problems, judge, data.verify.max_tests_per_problem, data.verify.time_budget_s)
            else:
                results = unverified(problems, data.verify.max_tests_per_problem)
            problems = []
            for v in results:
                stats.verified += v.verified
                stats.rejected.update({k: n for k, n in v.verdicts.items() if k not in ("passed", "not_verified")})
                if v.problem.solutions:
                    problems.append(v.problem)
                    examples.extend(_example(v.problem, i, c) for i, c in enumerate(v.problem.solutions))
                else:
                    stats.no_verified_solution += 1
        sides[side] = (examples, problems)

    overlap = {e.problem_id for e in sides["train"][0]} & {e.problem_id for e in sides["eval"][0]}
    if overlap:
        raise ConfigError(
            f"data.train_file and data.eval_file share {len(overlap)} problem(s) (e.g. {sorted(overlap)[0]}): "
            "the eval set would leak into training; remove them from one file"
        )
    stats.rejected = +stats.rejected
    stats.train, stats.eval = len(sides["train"][0]), len(sides["eval"][0])
    stats.train_problems = len({e.problem_id for e in sides["train"][0]})
    stats.eval_problems = len({e.problem_id for e in sides["eval"][0]})
    for ex in sides["train"][0] + sides["eval"][0]:
        stats.by_source[ex.source] += 1
        for d in ex.domains:
            stats.by_domain[d] += 1
    stats.seconds = time.monotonic() - started
    if stats.train < data.min_examples:
        raise TooFewExamples(f"data.train_file has {stats.train} usable examples, below data.min_examples={data.min_examples}")
    report = stats.report()
    if out_dir is not None:
        with DatasetWriter(out_dir) as writer:
            for side, (examples, problems) in sides.items():
                for ex in examples:
                    writer.write(f"{side}.jsonl", ex)
            for p in sides["eval"][1]:
                writer.write("eval_problems.jsonl", p)
            inputs = [SourceSection(type="lorafleet", path=data.train_file), SourceSection(type="lorafleet", path=data.eval_file)]
            writer.commit(_manifest(report, data, inputs, list(data.domains)))
        report["out_dir"] = str(out_dir)
    return report
