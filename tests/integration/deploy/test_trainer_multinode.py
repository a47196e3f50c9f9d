"""deploy/k8s/jobs/trainer-multinode.yaml (one training job across nodes) validated offline:
strict Kubernetes v1.33 schemas, and the wiring torchrun's c10d rendezvous and the trainer's
worker need. Kept out of kustomization.yaml: applying it would start a job."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from lorafleet.shared.config import parse_config

ROOT = Path(__file__).resolve().parents[3]
MANIFEST = ROOT / "deploy" / "k8s" / "jobs" / "trainer-multinode.yaml"
FIXTURES = ROOT / "tests" / "fixtures" / "deploy"


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text()) if d}


@pytest.fixture(scope="module")
def validate():
    bundle = json.loads((FIXTURES / "k8s-v1.33-strict.json").read_text())

    def errors(doc: dict) -> list[str]:
        key = bundle["x-kinds"][f"{doc['apiVersion']}/{doc['kind']}"]
        schema = {"$schema": bundle["$schema"], "$ref": f"#/$defs/{key}", "$defs": bundle["$defs"]}
        validator = jsonschema.validators.validator_for(schema)(schema)
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]

    return errors


def test_every_document_matches_the_strict_schema(docs, validate):
    assert set(docs) == {"Service", "ConfigMap", "Job"}
    assert {kind: validate(doc) for kind, doc in docs.items()} == {kind: [] for kind in docs}


def test_the_schema_rejects_a_broken_job(docs, validate):
    broken = json.loads(json.dumps(docs["Job"]))
    broken["spec"]["parallelism"] = "two"
    broken["spec"]["template"]["spec"]["containers"][0]["argz"] = []
    assert len(validate(broken)) >= 2


def test_torchrun_rendezvous_and_the_worker_are_wired(docs):
    job, svc = docs["Job"], docs["Service"]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"] >= 2
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    assert pod["subdomain"] == svc["metadata"]["name"] and pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "torch.distributed.run"]
    args = dict(a.lstrip("-").split("=", 1) for a in container["args"] if a.startswith("--"))
    assert args["rdzv-backend"] == "c10d" and int(args["nnodes"]) == spec["parallelism"]
    # pod 0's stable DNS name under the headless service hosts the rendezvous
    assert args["rdzv-endpoint"] == f"{job['metadata']['name']}-0.{svc['metadata']['name']}:29400"
    assert int(args["nproc-per-node"]) == container["resources"]["limits"]["nvidia.com/gpu"]
    assert container["args"][-3:] == ["-m", "lorafleet.services.trainer.worker", "/etc/lorafleet/job/job.json"]
    env = {e["name"] for e in container["env"]}
    assert {"LORAFLEET_TRAINER_RPC", "LORAFLEET_TRAINER_RPC_KEY"} <= env


def test_the_job_spec_is_a_valid_training_job_on_the_shared_volume(docs):
    import importlib.util

    spec = json.loads(docs["ConfigMap"]["data"]["job.json"])
    parse_config(spec["config"], "trainer-multinode.yaml job.json")
    pod = docs["Job"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert claims["data"] == "trainer-data", "the trainer pods' ReadWriteMany volume: job.json paths resolve on every node"
    for key in ("dataset_dir", "output_dir", "checkpoint_dir"):
        assert spec[key].startswith(mounts["data"] + "/"), key
    assert importlib.util.find_spec("lorafleet.services.trainer.worker") is not None


def test_rendered_for_a_job_it_still_validates_and_carries_the_job(validate):
    from lorafleet.services.trainer.multinode import job_name, render_job

    name = job_name("python-lora", "58e0f006-8ca4-5bb2-8c65-e2f0687959a9")
    assert name == "lorafleet-train-python-lora-58e0f006"
    spec = {"config": {"adapter_name": "python-lora", "base_model": "b", "training": {"processes": 24}},
            "dataset_dir": "/var/lib/lorafleet/trainer/jobs/x/dataset", "output_dir": "/var/lib/lorafleet/x",
            "checkpoint_dir": "/var/lib/lorafleet/c", "resume_refused": None}
    docs = render_job(MANIFEST.read_text(), name=name, nodes=3, gpus_per_node=8, job_spec=spec,
                      rpc_address="10.1.2.3:7070", rpc_key_hex="ab" * 32)
    kinds = {d["kind"]: d for d in docs}
    assert {k: validate(d) for k, d in kinds.items() if k != "Secret"} == {k: [] for k in kinds if k != "Secret"}
    assert "lorafleet-train-example" not in json.dumps(docs)
    job = kinds["Job"]["spec"]
    container = job["template"]["spec"]["containers"][0]
    assert job["parallelism"] == job["completions"] == 3
    assert "--nnodes=3" in container["args"] and "--nproc-per-node=8" in container["args"]
    assert f"--rdzv-endpoint={name}-0.{name}:29400" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert {"name": "LORAFLEET_TRAINER_RPC", "value": "10.1.2.3:7070"} in container["env"]
    assert json.loads(kinds["ConfigMap"]["data"]["job.json"]) == spec
    assert kinds["Secret"]["stringData"]["rpc-key"] == "ab" * 32 and kinds["Secret"]["metadata"]["name"] == name
