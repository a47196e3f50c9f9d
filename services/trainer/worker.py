"""A torchrun worker: `python -m torch.distributed.run ... -m lorafleet.services.trainer.worker SPEC`.

Every rank runs `train()` on the same job; HF Trainer/accelerate set up DDP from torchrun's
environment. Rank 0 connects back to the trainer service (distributed.py) and sends it
progress, each checkpoint (waiting until it is durable) and the result or the error.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from lorafleet.services.trainer.distributed import KEY_ENV, RPC_ENV
from lorafleet.services.trainer.train import TrainJob, train, world
from lorafleet.shared.config import parse_config


def rpc_address(value: str) -> tuple:
    """A socket path (the trainer on this machine) or host:port (a trainer pod, across nodes)."""
    if value.startswith("/"):
        return value, "AF_UNIX"
    host, _, port = value.rpartition(":")
    return (host, int(port)), "AF_INET"


def main(spec_path: str) -> int:
    rank, world_size = world()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank}/{world_size} %(name)s %(message)s")
    spec = json.loads(Path(spec_path).read_text())
    conn = None
    if rank == 0:
        from multiprocessing.connection import Client

        conn = Client(*rpc_address(os.environ[RPC_ENV]), authkey=bytes.fromhex(os.environ[KEY_ENV]))

    def progress(fields: dict) -> None:
        conn.send(("progress", fields))

    def checkpoint(path: Path) -> None:
        conn.send(("checkpoint", str(path)))
        conn.recv()  # "saved"

    job = TrainJob(
        config=parse_config(spec["config"], "distributed job spec"),
        dataset_dir=Path(spec["dataset_dir"]), output_dir=Path(spec["output_dir"]),
        checkpoint_dir=Path(spec["checkpoint_dir"]),
        on_progress=progress if conn else None, on_checkpoint=checkpoint if conn else None,
        resume_refused=spec.get("resume_refused"),
    )
    try:
        result = train(job)
    except Exception as exc:
        if conn is not None:
            conn.send(("error", {"type": type(exc).__name__, "message": str(exc)}))
            conn.close()
        raise
    if conn is not None:
        payload = asdict(result)
        payload["output_dir"] = str(result.output_dir)
        conn.send(("result", payload))
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
