"""Offline checks of what operators deploy for observability: the probes and scrape annotations of every
service Deployment, and the Grafana dashboard (its layout and every metric it queries)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from lorafleet.fleet import SERVICES

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "lorafleet.json"
# Consumer lag comes from the NATS Prometheus exporter (prometheus-nats-exporter -jsz=all), not from us.
NATS_EXPORTER_METRICS = {"jetstream_consumer_num_pending", "jetstream_consumer_num_ack_pending"}
PROMQL_FUNCTIONS = {"sum", "max", "min", "avg", "rate", "increase", "histogram_quantile", "time", "by", "le"}


def lorafleet_metric_names() -> set[str]:
    """Sample names (counters' _total, histograms' _bucket/_count/_sum) of every metric the code defines."""
    from prometheus_client import REGISTRY

    import lorafleet.shared.telemetry.metrics  # noqa: F401  (registers them)

    return {s.name for family in REGISTRY.collect() if family.name.startswith("lorafleet_") for s in family.samples} | {
        f"{family.name}{suffix}" for family in REGISTRY.collect() if family.name.startswith("lorafleet_")
        for suffix in ("", "_total", "_bucket", "_count", "_sum")
        if family.type in ("counter", "histogram") or suffix == ""}


def dashboard_problems(dashboard: dict) -> list[str]:
    known = lorafleet_metric_names() | NATS_EXPORTER_METRICS
    problems, cells = [], set()
    panels = dashboard.get("panels", [])
    if len({p["id"] for p in panels}) != len(panels):
        problems.append("panel ids are not unique")
    for panel in panels:
        g = panel["gridPos"]
        if g["x"] < 0 or g["x"] + g["w"] > 24:
            problems.append(f"{panel['title']}: outside the 24-column grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    problems.append(f"{panel['title']}: overlaps another panel at {(x, y)}")
                    break
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            problems.append(f"{panel['title']}: datasource is not the ${{DS_PROMETHEUS}} input")
        targets = panel.get("targets", [])
        if not targets or len({t["refId"] for t in targets}) != len(targets):
            problems.append(f"{panel['title']}: no targets, or refIds repeat")
        for t in targets:
            expr = t["expr"]
            for open_, close in ("()", "{}", "[]"):
                if expr.count(open_) != expr.count(close):
                    problems.append(f"{panel['title']}: unbalanced {open_}{close} in {expr}")
            for fn in ("rate(", "increase("):
                for part in expr.split(fn)[1:]:
                    if not re.match(r"[^()]*\[\d+[smh]\]\)", part):
                        problems.append(f"{panel['title']}: {fn} without a range vector in {expr}")
            # Metric names: identifiers outside label matchers {..} and legends, not PromQL words.
            bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
            for name in re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", bare):
                if name in PROMQL_FUNCTIONS or not ("_" in name and (name.startswith("lorafleet_") or name.startswith("jetstream_"))):
                    continue
                if name not in known:
                    problems.append(f"{panel['title']}: unknown metric {name}")
    return problems


def test_the_grafana_dashboard_queries_only_metrics_that_exist():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "lorafleet"
    assert dashboard_problems(dashboard) == []
    queried = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for needed in ("lorafleet_events_handled_total", "lorafleet_events_failed_total", "jetstream_consumer_num_pending",
                   "lorafleet_trainer_step", "lorafleet_registry_outcomes_total", "lorafleet_gateway_request_seconds_bucket"):
        assert needed in queried, f"the dashboard shows no {needed}"


def test_the_dashboard_check_catches_mistakes():
    dashboard = json.loads(DASHBOARD.read_text())
    broken = json.loads(json.dumps(dashboard))
    panel = next(p for p in broken["panels"] if p["type"] == "timeseries")
    panel["targets"][0]["expr"] = "rate(lorafleet_no_such_metric_total[5m]"
    panel["gridPos"] = dict(broken["panels"][2]["gridPos"])
    problems = " ".join(dashboard_problems(broken))
    assert "unknown metric lorafleet_no_such_metric_total" in problems
    assert "unbalanced" in problems and "overlaps" in problems


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_deployment_has_probes_and_scrape_annotations(service):
    config = yaml.safe_load((ROOT / "deploy" / "k8s" / "config.yaml").read_text())
    port = int(config["data"]["LORAFLEET_METRICS_PORT"])
    assert config["data"]["LORAFLEET_METRICS_HOST"] == "0.0.0.0"
    deployment = next(d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / f"{service}.yaml").read_text())
                      if d and d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == port
    container = template["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": port} in container["ports"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
