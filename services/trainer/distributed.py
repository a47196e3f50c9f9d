"""One job on N processes of this machine: torchrun (torch.distributed.run) + DDP.

The service process stays the only one on the bus. It launches
`torchrun --standalone --nproc-per-node N -m lorafleet.services.trainer.worker SPEC`
and serves rank 0 over a local socket (multiprocessing.connection, with a random key):
progress reports become `training.progress` events, each checkpoint is uploaded to the
artifact store before rank 0 goes on, and the result (or the error) comes back the same
way. The other ranks never talk to the parent: rank 0 alone reports, checkpoints and
writes the adapter.

DDP backend: accelerate picks NCCL on CUDA, gloo on CPU. The global batch is
batch_size x gradient_accumulation_steps x N (accelerate shards the batches).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Any

from lorafleet.shared.errors import ConfigError, LorafleetError

log = logging.getLogger(__name__)

RPC_ENV, KEY_ENV = "LORAFLEET_TRAINER_RPC", "LORAFLEET_TRAINER_RPC_KEY"


class WorkerFailed(LorafleetError):
    """The worker processes died without a result (retriable: a redelivery resumes from the checkpoint)."""


def available_processes() -> tuple[int, str]:
    """How many training processes this machine can run, and what they are (GPUs, else cores)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count(), "CUDA GPUs"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores, "CPU cores (no CUDA GPU)"


def check_processes(processes: int) -> None:
    """training.processes above what the machine has: a config error before anything starts."""
    have, what = available_processes()
    if processes > have:
        raise ConfigError(
            f"training.processes={processes}, but this machine has {have} {what}: set training.processes to at "
            f"most {have}, or run the job across machines (deploy/k8s/trainer-multinode.yaml, docs/trainer.md)"
        )


def worker_command(processes: int, spec: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", "lorafleet.services.trainer.worker", str(spec)]


def run_distributed(job: Any, processes: int, startup_timeout_s: float = 600.0):
    """Run `job` (a TrainJob) on `processes` local workers; blocks (call it from a thread).
    Returns the TrainResult rank 0 sends back; re-raises its TooFewExamples / OutOfMemory /
    ConfigError as such (not retriable) and anything else as WorkerFailed."""
    from lorafleet.services.trainer.train import OutOfMemory, TooFewExamples, TrainResult

    check_processes(processes)
    errors = {"TooFewExamples": TooFewExamples, "OutOfMemory": OutOfMemory, "ConfigError": ConfigError}
    with tempfile.TemporaryDirectory(prefix="lorafleet-ddp-") as tmp:
        spec = Path(tmp) / "job.json"
        spec.write_text(json.dumps({
            "config": job.config.model_dump(mode="json"), "dataset_dir": str(job.dataset_dir),
            "output_dir": str(job.output_dir), "checkpoint_dir": str(job.checkpoint_dir),
            "resume_refused": job.resume_refused,
        }))
        key = secrets.token_bytes(32)
        address = str(Path(tmp) / "rpc.sock")
        env = {**os.environ, RPC_ENV: address, KEY_ENV: key.hex()}
        if not os.environ.get("LORAFLEET_TORCH_THREADS"):
            # The cores shared out between the workers (each would take half of all of them otherwise).
            env["LORAFLEET_TORCH_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
        with Listener(address, family="AF_UNIX", authkey=key) as listener:
            # In the service's process group: whatever stops the service's group (Ctrl-C, `up`, a pod
            # kill) stops the workers too, instead of leaving them training for nobody.
            proc = subprocess.Popen(worker_command(processes, spec), env=env)
            try:
                conn = _accept(listener, proc, startup_timeout_s)
                with conn:
                    outcome = _serve(conn, proc, job)
            finally:
                _stop(proc)
        kind, payload = outcome
        if kind == "result":
            return TrainResult(output_dir=Path(payload.pop("output_dir")), **payload)
        if kind == "error" and payload["type"] in errors:
            raise errors[payload["type"]](payload["message"])
        detail = f"{payload['type']}: {payload['message']}" if kind == "error" else payload
        raise WorkerFailed(f"training on {processes} processes failed: {detail}")


def _accept(listener: Listener, proc: subprocess.Popen, timeout_s: float):
    """Wait for rank 0 to connect, noticing workers that die first (Listener.accept blocks)."""
    import socket

    sock: socket.socket = listener._listener._socket  # noqa: SLF001 - the only way to bound accept()
    sock.settimeout(1.0)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return listener.accept()
        except (TimeoutError, socket.timeout):
            if proc.poll() is not None:
                raise WorkerFailed(f"torchrun exited with {proc.returncode} before rank 0 started (see the log)")
            if time.monotonic() > deadline:
                raise WorkerFailed(f"rank 0 did not start within {timeout_s:.0f}s")


def _serve(conn, proc: subprocess.Popen, job: Any) -> tuple[str, Any]:
    """Answer rank 0 until it sends its result or error, or the workers die."""
    while True:
        if not conn.poll(1.0):
            if proc.poll() is not None:
                return "died", f"torchrun exited with {proc.returncode} without a result (see the log)"
            continue
        try:
            kind, payload = conn.recv()
        except EOFError:
            proc.wait(timeout=60)
            return "died", f"rank 0 closed its connection; torchrun exited with {proc.returncode}"
        if kind == "progress":
            if job.on_progress is not None:
                job.on_progress(payload)
        elif kind == "checkpoint":
            if job.on_checkpoint is not None:
                job.on_checkpoint(Path(payload))
            conn.send("saved")  # rank 0 waits for this: the checkpoint is durable before it goes on
        elif kind in ("result", "error"):
            proc.wait(timeout=120)
            return kind, payload


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to torchrun's agent, which stops its workers; SIGKILL if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
