"""The ingest pipeline: sources -> normalise -> verify -> dedup -> decontaminate ->
classify/route -> split -> dataset artifact. No NATS, no CLI: the service and the
CLI both call `build`.

Memory stays flat in the size of the sources: rows stream through normalise and
verification in chunks, surviving problems go to a spool file on disk, and only
small per-problem records (offset, id, MinHash signature) stay in memory until the
final pass merges duplicates, splits and writes.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterable

from lorafleet.services.ingest import sources as loaders
from lorafleet.services.ingest.classify import adapters_for, classify_problem
from lorafleet.services.ingest.dedup import NearDuplicates, UnionFind, pick_diverse, unique_solutions
from lorafleet.services.ingest.normalise import Malformed
from lorafleet.services.ingest.sources.files import input_hash
from lorafleet.services.ingest.split import after_cutoff, eval_ids, resolve_cutoff
from lorafleet.services.ingest.verify import Judge, Verified, select_tests, unverified, verify_problems
from lorafleet.services.ingest.write import DatasetWriter
from lorafleet.shared.config import DataSection, SourceSection
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.problems import Problem, TrainExample

log = logging.getLogger("lorafleet.ingest")
FORMAT = "lorafleet-dataset/1"
Progress = Callable[[str, int], None]  # (what, rows read so far in this source)


class TooFewExamples(LorafleetError):
    """Fewer training examples than the config's `min_examples`."""


@dataclass
class Stats:
    problems: int = 0
    solutions: int = 0
    verified: int = 0
    rejected: Counter = field(default_factory=Counter)
    malformed: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    duplicate_problems: int = 0
    duplicate_solutions: int = 0
    decontaminated: int = 0
    no_verified_solution: int = 0
    out_of_domain: int = 0
    validation_before_cutoff: int = 0
    train: int = 0
    eval: int = 0
    train_problems: int = 0
    eval_problems: int = 0
    validation_problems: int = 0
    by_domain: Counter = field(default_factory=Counter)
    by_source: Counter = field(default_factory=Counter)
    by_difficulty: Counter = field(default_factory=Counter)
    sources: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    cutoff: str | None = None
    verification: bool = True
    seconds: float = 0.0

    def report(self) -> dict[str, Any]:
        """The CLI's --json object and the dataset.ready stats."""
        return {
            "problems": self.problems,
            "solutions": self.solutions,
            "verified": self.verified,
            "rejected": dict(sorted(self.rejected.items())),
            "malformed": dict(sorted(self.malformed.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "duplicates_removed": self.duplicate_problems + self.duplicate_solutions,
            "duplicate_problems": self.duplicate_problems,
            "duplicate_solutions": self.duplicate_solutions,
            "decontaminated": self.decontaminated,
            "no_verified_solution": self.no_verified_solution,
            "out_of_domain": self.out_of_domain,
            "validation_before_cutoff": self.validation_before_cutoff,
            "train": self.train,
            "eval": self.eval,
            "train_problems": self.train_problems,
            "eval_problems": self.eval_problems,
            "validation_problems": self.validation_problems,
            "by_domain": dict(sorted(self.by_domain.items())),
            "by_source": dict(sorted(self.by_source.items())),
            "by_difficulty": dict(sorted(self.by_difficulty.items())),
            "sources": {k: dict(v) for k, v in sorted(self.sources.items())},
            "validation_cutoff": self.cutoff,
            "verification": self.verification,
            "seconds": round(self.seconds, 3),
        }


class _Spool:
    """Problems on disk, read back by offset."""

    def __init__(self, path: Path) -> None:
        self.f: IO[bytes] = open(path, "w+b")

    def put(self, problem: Problem) -> int:
        self.f.seek(0, 2)
        offset = self.f.tell()
        self.f.write(problem.model_dump_json().encode() + b"\n")
        return offset

    def get(self, offset: int) -> Problem:
        self.f.seek(offset)
        return Problem.model_validate_json(self.f.readline())

    def close(self) -> None:
        self.f.close()


@dataclass
class _Entry:
    offset: int
    id: str
    source: str
    contest_date: str | None
    contaminated: bool
    domains: tuple[str, ...] = ()


def _example(problem: Problem, index: int, code: str) -> TrainExample:
    return TrainExample(
        id=f"{problem.id}#{index}",
        problem_id=problem.id,
        source=problem.source,
        statement=problem.statement,
        starter_code=problem.starter_code,
        code=code,
        domains=list(problem.domains),
        difficulty=problem.difficulty,
        meta={"tags": problem.tags, "difficulty_raw": problem.difficulty_raw,
              "adapters": adapters_for(problem.domains)},
    )


def _merge(members: list[Problem], max_solutions: int, stats: Stats) -> Problem:
    """Near-duplicate problems become one: the statement and tests of the member with
    the most tests, every verified solution (exact duplicates dropped, then the most
    diverse `max_solutions`), tags and domains of all."""
    rep = max(members, key=lambda p: len(p.tests))  # max keeps the earliest on ties
    solutions, removed = unique_solutions([s for p in members for s in p.solutions])
    stats.duplicate_solutions += removed
    if len(members) > 1:
        stats.duplicate_problems += len(members) - 1
    return rep.model_copy(update={
        "solutions": pick_diverse(solutions, max_solutions),
        "tags": list(dict.fromkeys(t for p in members for t in p.tags)),
        "domains": sorted({d for p in members for d in p.domains}),
        "meta": {**rep.meta, **({"merged_from": [p.id for p in members]} if len(members) > 1 else {}),
                 "verified_solutions": len(solutions)},
    })


def _in_domains_of(have: Iterable[str], wanted: list[str]) -> bool:
    return not wanted or bool(set(have) & set(wanted))


def _in_domains(problem: Problem, domains: list[str]) -> bool:
    return _in_domains_of(problem.domains, domains)


def build(
    sources: list[SourceSection],
    data: DataSection,
    *,
    judge: Judge | None,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    chunk_size: int = 256,
    min_examples: int | None = None,
    domains: list[str] | None = None,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run the pipeline; write the dataset to `out_dir` (if given) and return the report.

    `judge` is required when `data.verify.enabled`. `min_examples` / `domains` default
    to the config's (`data import` passes 0 / all domains).
    """
    if not sources:
        raise LorafleetError("no data sources: list them under `data.sources` (type + path) or set train_file/eval_file")
    for s in sources:
        loaders.check_type(s.type)
    if data.verify.enabled and judge is None:
        raise LorafleetError("verification is on but no sandbox judge was given")
    min_examples = data.min_examples if min_examples is None else min_examples
    domains = list(data.domains) if domains is None else domains
    started = time.monotonic()
    stats = Stats(verification=data.verify.enabled)
    with tempfile.TemporaryDirectory(prefix="lorafleet-ingest-", dir=work_dir) as tmp:
        train_spool, val_spool, merged_spool = (_Spool(Path(tmp) / n) for n in ("train", "validation", "merged"))
        try:
            entries, val_entries, uf = _load(sources, data, judge, domains, stats, progress, chunk_size,
                                             train_spool, val_spool)
            report = _finish(entries, val_entries, uf, data, domains, min_examples, stats, out_dir,
                             train_spool, val_spool, merged_spool, sources, started)
        finally:
            for s in (train_spool, val_spool, merged_spool):
                s.close()
    return report


def _load(sources, data, judge, domains, stats, progress, chunk_size, train_spool, val_spool):
    dedup_cfg = data.dedup
    val_index = NearDuplicates(dedup_cfg.threshold, dedup_cfg.num_perm, dedup_cfg.number_agreement)
    train_index = NearDuplicates(dedup_cfg.threshold, dedup_cfg.num_perm, dedup_cfg.number_agreement)
    uf = UnionFind()
    entries: list[_Entry] = []
    val_entries: list[_Entry] = []

    def flush(buffer: list[Problem], name: str) -> None:
        if data.verify.enabled:
            results = verify_problems(buffer, judge, data.verify.max_tests_per_problem, data.verify.time_budget_s)
        else:
            results = unverified(buffer, data.verify.max_tests_per_problem)
        for v in results:
            _record(v, name)
        buffer.clear()

    def _record(v: Verified, name: str) -> None:
        stats.verified += v.verified
        stats.sources[name]["verified"] += v.verified
        stats.duplicate_solutions += v.duplicates
        for verdict, n in v.verdicts.items():
            if verdict not in ("passed", "not_verified"):
                stats.rejected[verdict] += n
        p = v.problem
        if not p.solutions:
            stats.no_verified_solution += 1
            return
        idx = len(entries)
        uf.add(idx)
        sig = train_index.signature(p.statement)
        contaminated = bool(val_index.matches(sig)) if data.decontaminate and len(val_index) else False
        entries.append(_Entry(train_spool.put(p), p.id, p.source, p.contest_date, contaminated, tuple(p.domains)))
        for other in train_index.add(str(idx), sig):
            uf.union(idx, int(other))

    seen_ids: set[str] = set()
    # Validation sources first, so every training problem is checked against all of them as it arrives.
    for source in sorted(sources, key=lambda s: s.role != "validation"):
        name = source.type
        buffer: list[Problem] = []
        count = 0
        log.info("ingest: reading %s (%s) as %s", name, source.path or source.hub_name or "built-in", source.role)
        for item in loaders.problems(source, domains):
            if isinstance(item, Malformed):
                stats.malformed[item.reason] += 1
                stats.sources[name]["malformed"] += 1
                continue
            if source.limit is not None and count >= source.limit:
                break
            if item.id in seen_ids:  # the same file listed twice, or two sources that clash
                stats.malformed["duplicate_id"] += 1
                stats.sources[name]["malformed"] += 1
                continue
            seen_ids.add(item.id)
            count += 1
            stats.problems += 1
            stats.sources[name]["problems"] += 1
            if py2 := int(item.meta.get("skipped_python2") or 0):
                stats.skipped["python2"] += py2
            problem = classify_problem(item)
            if source.role == "validation":
                tests = select_tests(problem, data.verify.max_tests_per_problem)
                val_entries.append(_Entry(val_spool.put(problem.model_copy(update={"tests": tests, "solutions": []})),
                                          problem.id, problem.source, problem.contest_date, False))
                val_index.add(problem.id, val_index.signature(problem.statement))
                continue
            stats.solutions += len(problem.solutions)
            stats.sources[name]["solutions"] += len(problem.solutions)
            buffer.append(problem)
            if len(buffer) >= chunk_size:
                flush(buffer, name)
                if progress:
                    progress(name, count)
        if buffer:
            flush(buffer, name)
        if progress:
            progress(name, count)
    return entries, val_entries, uf


def _finish(entries, val_entries, uf, data, domains, min_examples, stats, out_dir,
            train_spool, val_spool, merged_spool, sources, started):
    stats.cutoff = resolve_cutoff(data.validation_cutoff, (e.contest_date for e in entries))
    kept: list[tuple[str, _Spool, int]] = []  # (problem id, where it is, offset)
    for root, members in sorted(uf.groups().items()):
        if any(entries[m].contaminated for m in members):
            stats.decontaminated += len(members)
            continue
        if len(members) == 1:  # most problems: nothing to merge, no need to read them yet
            e = entries[root]
            if not _in_domains_of(e.domains, domains):
                stats.out_of_domain += 1
                continue
            kept.append((e.id, train_spool, e.offset))
            continue
        merged = _merge([train_spool.get(entries[m].offset) for m in sorted(members)],
                        data.max_solutions_per_problem, stats)
        if not _in_domains(merged, domains):
            stats.out_of_domain += 1
            continue
        kept.append((merged.id, merged_spool, merged_spool.put(merged)))

    to_eval = eval_ids((pid for pid, _, _ in kept), data.eval_fraction, data.seed)
    writer = DatasetWriter(out_dir) if out_dir is not None else None
    try:
        for pid, spool, offset in kept:
            p = spool.get(offset)
            if len(p.solutions) > data.max_solutions_per_problem:
                p = p.model_copy(update={"solutions": pick_diverse(p.solutions, data.max_solutions_per_problem)})
            side = "eval" if pid in to_eval else "train"
            for i, code in enumerate(p.solutions):
                if writer:
                    writer.write(f"{side}.jsonl", _example(p, i, code))
            n = len(p.solutions)
            if side == "eval":
                stats.eval += n
                stats.eval_problems += 1
                if writer:
                    writer.write("eval_problems.jsonl", p.model_copy(update={"meta": {**p.meta, "role": "eval_split"}}))
            else:
                stats.train += n
                stats.train_problems += 1
            for d in p.domains:
                stats.by_domain[d] += 1
            stats.by_source[p.source] += 1
            stats.by_difficulty[p.difficulty] += 1
            stats.sources[p.source][f"{side}_problems"] += 1
        for e in val_entries:
            p = val_spool.get(e.offset)
            dated_source = p.source == "livecodebench" or p.contest_date is not None
            if dated_source and not after_cutoff(p.contest_date, stats.cutoff):
                stats.validation_before_cutoff += 1
                continue
            if not _in_domains(p, domains):
                stats.out_of_domain += 1
                continue
            stats.validation_problems += 1
            stats.sources[p.source]["validation_problems"] += 1
            if writer:
                writer.write("eval_problems.jsonl", p.model_copy(update={"meta": {**p.meta, "role": "validation"}}))
        stats.seconds = time.monotonic() - started
        if stats.train < min_examples:
            raise TooFewExamples(
                f"only {stats.train} training examples (from {stats.problems} problems, {stats.verified} verified "
                f"solutions), below data.min_examples={min_examples}: add sources, raise their `limit`, widen "
                f"`domains`, or lower min_examples"
            )
        report = stats.report()
        if writer:
            writer.commit(_manifest(report, data, sources, domains))
            report["out_dir"] = str(writer.out_dir)
        return report
    finally:
        if writer:
            writer.abort()


def _manifest(report: dict[str, Any], data: DataSection, sources: Iterable[SourceSection], domains: list[str]) -> dict[str, Any]:
    from lorafleet import __version__

    return {
        "format": FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "lorafleet_version": __version__,
        "domains": domains,
        "config": data.model_dump(mode="json"),
        "inputs": [{**s.model_dump(mode="json"), "sha256": input_hash(s.path)} for s in sources],
        "stats": report,
    }


def manifest_of(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "manifest.json").read_text())
