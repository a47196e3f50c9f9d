"""One job across machines: render deploy/k8s/jobs/trainer-multinode.yaml for a job.

Pure: template text + the job's values in, Kubernetes objects out (Service, ConfigMap with
job.json, indexed Job, and the Secret holding rank 0's RPC key). Creating them in a cluster,
and serving rank 0 over TCP, is the trainer's hand-off (docs/trainer.md, "One job across
machines"); that part is not wired yet.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from lorafleet.shared.errors import ConfigError

TEMPLATE_NAME = "lorafleet-train-example"


def job_name(adapter_name: str, event_id: str) -> str:
    """A DNS-1035 label (the headless service needs one): lorafleet-train-<adapter>-<event id prefix>."""
    stem = re.sub(r"[^a-z0-9-]", "-", adapter_name.lower()).strip("-")[:30].strip("-")
    return f"lorafleet-train-{stem}-{event_id.replace('-', '')[:8]}"


def render_job(template: str, *, name: str, nodes: int, gpus_per_node: int, job_spec: dict[str, Any],
               rpc_address: str, rpc_key_hex: str) -> list[dict[str, Any]]:
    if nodes < 1 or gpus_per_node < 1:
        raise ConfigError(f"a multi-node job needs nodes >= 1 and GPUs per node >= 1 (got {nodes}, {gpus_per_node})")
    if len(name) > 63 - len("-0") or not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        raise ConfigError(f"job name {name!r} is not a DNS label of at most 61 characters")
    docs = [d for d in yaml.safe_load_all(template.replace(TEMPLATE_NAME, name)) if d]
    by_kind = {d["kind"]: d for d in docs}
    by_kind["ConfigMap"]["data"]["job.json"] = json.dumps(job_spec, indent=1)
    job = by_kind["Job"]["spec"]
    job["parallelism"] = job["completions"] = nodes
    container = job["template"]["spec"]["containers"][0]
    args = []
    for arg in container["args"]:
        if arg.startswith("--nnodes="):
            arg = f"--nnodes={nodes}"
        elif arg.startswith("--nproc-per-node="):
            arg = f"--nproc-per-node={gpus_per_node}"
        args.append(arg)
    container["args"] = args
    for section in ("requests", "limits"):
        container["resources"][section]["nvidia.com/gpu"] = gpus_per_node
    for env in container["env"]:
        if env["name"] == "LORAFLEET_TRAINER_RPC":
            env["value"] = rpc_address
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": name, "namespace": by_kind["Job"]["metadata"]["namespace"],
                           "labels": {"app.kubernetes.io/part-of": "lorafleet"}},
              "stringData": {"rpc-key": rpc_key_hex}}
    return [*docs, secret]
