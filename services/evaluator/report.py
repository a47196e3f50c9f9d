"""The evaluation report: report.json (metrics, gate, per-problem results) and
report.html with matplotlib plots beside it (pass@k curves base vs adapter,
pass@1 by difficulty and by source, verdict breakdown, latency).

The directory is built under a temporary name and renamed into place, so a
reader never sees half a report.
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from lorafleet.services.evaluator.models import ProblemResult
from lorafleet.services.evaluator.passk import mean_pass_at_k
from lorafleet.shared.events import GateCriterion

COLORS = {"base": "#8c8c8c", "adapter": "#1f77b4", "samples": "#2ca02c"}


def build_report(
    metrics: dict[str, Any],
    results: list[ProblemResult],
    gate: list[GateCriterion] | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    return {
        "meta": meta,
        "gate": {"passed": bool(gate) and all(c.passed for c in gate), "criteria": [c.model_dump() for c in gate or []]},
        "metrics": metrics,
        "problems": [r.model_dump() for r in sorted(results, key=lambda r: (r.problem_id, r.variant))],
    }


def _variants(results: list[ProblemResult]) -> dict[str, list[ProblemResult]]:
    out: dict[str, list[ProblemResult]] = {}
    for r in results:
        out.setdefault(r.variant, []).append(r)
    order = {"base": 0, "adapter": 1, "samples": 2}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], 9)))


def _plots(report: dict[str, Any], results: list[ProblemResult], out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = _variants(results)
    metrics = report["metrics"]
    made: list[tuple[str, str]] = []

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append((name, title))

    # pass@k for every k up to the smallest n
    n_min = min((r.n for rs in variants.values() for r in rs), default=0)
    if n_min >= 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        ks = list(range(1, n_min + 1))
        for v, rs in variants.items():
            ys = [mean_pass_at_k([(r.n, r.correct) for r in rs], k) for k in ks]
            ax.plot(ks, ys, marker="o", label=v, color=COLORS.get(v))
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (unbiased)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(f"pass@k, {metrics.get('problems', 0)} problems, n={n_min}")
        save(fig, "pass_at_k.png", "pass@k curves")

    for key, label in (("difficulty", "difficulty"), ("source", "source")):
        groups = sorted({getattr(r, key) for r in results})
        if not groups:
            continue
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(groups) + 2), 4))
        width = 0.8 / max(1, len(variants))
        for i, (v, rs) in enumerate(variants.items()):
            ys = []
            for g in groups:
                counts = [(r.n, r.correct) for r in rs if getattr(r, key) == g and r.n]
                ys.append(mean_pass_at_k(counts, 1) or 0.0)
            xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(groups))]
            ax.bar(xs, ys, width=width, label=v, color=COLORS.get(v))
        counts_txt = [f"{g}\n({sum(1 for r in results if getattr(r, key) == g) // max(1, len(variants))})" for g in groups]
        ax.set_xticks(range(len(groups)), counts_txt)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("pass@1")
        ax.set_title(f"pass@1 by {label} (problems)")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        save(fig, f"pass_at_1_by_{key}.png", f"pass@1 by {label}")

    verdicts = sorted({s.verdict for r in results for s in r.samples if s.index >= 0})
    if verdicts:
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(verdicts) + 2), 4))
        width = 0.8 / max(1, len(variants))
        for i, (v, rs) in enumerate(variants.items()):
            sampled = [s for r in rs for s in r.samples if s.index >= 0]
            ys = [sum(s.verdict == name for s in sampled) / max(1, len(sampled)) for name in verdicts]
            xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(verdicts))]
            ax.bar(xs, ys, width=width, label=v, color=COLORS.get(v))
        ax.set_xticks(range(len(verdicts)), verdicts, rotation=20)
        ax.set_ylabel("share of samples")
        ax.set_title("verdict breakdown (sampled completions)")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        save(fig, "verdicts.png", "verdict breakdown")

    lat = {v: (metrics.get(v) or {}).get("latency") for v in variants}
    lat = {v: x for v, x in lat.items() if x and x.get("ttft_s_median") is not None}
    if lat:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
        for ax, key, label in ((axes[0], "ttft_s_median", "time to first token (ms, median)"), (axes[1], "tpot_s_median", "time per output token (ms, median)")):
            names = list(lat)
            ax.bar(names, [1000 * (lat[v].get(key) or 0.0) for v in names], color=[COLORS.get(v) for v in names])
            ax.set_title(label)
            ax.grid(axis="y", alpha=0.3)
        save(fig, "latency.png", "latency")
    return made


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{100 * x:.1f}%" if pct else f"{x:.4g}"
    return html.escape(str(x))


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict[str, Any], plots: list[tuple[str, str]]) -> str:
    m, meta, gate = report["metrics"], report["meta"], report["gate"]
    variants = [v for v in ("base", "adapter", "samples") if v in m]
    parts = [f"<h1>Evaluation: {html.escape(str(meta.get('adapter_name') or meta.get('title') or 'samples'))}</h1>"]
    parts.append(_table(["field", "value"], [[html.escape(k), _fmt(v)] for k, v in meta.items() if not isinstance(v, (dict, list))]))
    if gate["criteria"]:
        verdict = "PASSED" if gate["passed"] else "FAILED"
        parts.append(f"<h2>Gate: <span class='{verdict.lower()}'>{verdict}</span></h2>")
        parts.append(_table(["criterion", "measured", "threshold", "result"], [
            [html.escape(c["name"]), _fmt(c["measured"]), f"{html.escape(c['comparison'])} {_fmt(c['threshold'])}",
             "<span class='passed'>pass</span>" if c["passed"] else "<span class='failed'>fail</span>"]
            for c in gate["criteria"]
        ]))
    keys = [f"pass@{k}" for k in m.get("k", [])] + ["greedy_pass@1", "error_rate", "samples"]
    parts.append("<h2>Scores</h2>")
    parts.append(_table(["metric"] + variants, [[k] + [_fmt((m.get(v) or {}).get(k)) for v in variants] for k in keys]))
    for key in ("delta_pass@1", "delta_greedy_pass@1"):
        if d := m.get(key):
            parts.append(f"<p><b>Δ{html.escape(key.removeprefix('delta_'))}</b> (adapter − base) = {d['mean']:+.4f}, "
                         f"{int(100 * d['confidence'])}% bootstrap CI [{d['low']:+.4f}, {d['high']:+.4f}] over {d['problems']} problems</p>")
    lat_rows = []
    for key in ("ttft_s_mean", "ttft_s_median", "tpot_s_mean", "tpot_s_median", "output_tokens_mean", "requests"):
        lat_rows.append([key] + [_fmt(((m.get(v) or {}).get("latency") or {}).get(key)) for v in variants])
    if any(((m.get(v) or {}).get("latency")) for v in variants):
        parts.append("<h2>Latency</h2>")
        parts.append(_table(["metric"] + variants, lat_rows))
        parts.append(f"<p>latency increase: {_fmt(m.get('latency_increase'), pct=True)} "
                     f"(TTFT {_fmt(m.get('ttft_s_increase'), pct=True)}, TPOT {_fmt(m.get('tpot_s_increase'), pct=True)})</p>")
    for name, title in plots:
        parts.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(title)}'><figcaption>{html.escape(title)}</figcaption></figure>")
    parts.append("<h2>Definitions</h2><ul>" + "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in m.get("definitions", {}).items()) + "</ul>")
    per: dict[str, dict[str, Any]] = {}
    for p in report["problems"]:
        row = per.setdefault(p["problem_id"], {"source": p["source"], "difficulty": p["difficulty"]})
        row[p["variant"]] = f"{p['correct']}/{p['n']}" + ("" if p["greedy_passed"] is None else (" ✓" if p["greedy_passed"] else " ✗"))
    parts.append("<h2>Problems</h2><p>correct/n samples; ✓/✗ = greedy sample</p>")
    parts.append(_table(["problem", "source", "difficulty"] + variants, [
        [html.escape(pid), html.escape(r["source"]), html.escape(r["difficulty"])] + [html.escape(r.get(v, "")) for v in variants]
        for pid, r in sorted(per.items())
    ]))
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.passed{color:#2a7a2a}.failed{color:#b22}"
             "img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>lorafleet evaluation</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"


def write_report(out_dir: str | Path, report: dict[str, Any], results: list[ProblemResult]) -> Path:
    """Write report.json, report.html and the plots as `out_dir` (replacing it atomically)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        plots = _plots(report, results, partial)
        report = {**report, "plots": [name for name, _ in plots]}
        (partial / "report.json").write_text(json.dumps(report, indent=2, default=str))
        (partial / "report.html").write_text(render_html(report, plots))
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.old")
            out_dir.rename(old)
            partial.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            partial.rename(out_dir)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return out_dir
