"""scripts/gpu-check: its CPU mode runs the whole pipeline (local base, QLoRA and LoRA through
train(), verified merges, pass@1 judged by the sandbox) on the tiny model. The GPU run itself
needs a GPU (docs/notes/issue-23.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "gpu-check"


def run(*args, timeout=900):
    env = {**os.environ, "LORAFLEET_TORCH_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


def test_without_a_gpu_it_says_how_to_run_the_cpu_check():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal is for CPU-only machines")  # the GPU run is the real check
    out = run("--steps", "1")
    assert out.returncode == 2 and "--cpu-tiny" in out.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cpu_tiny_mode_trains_merges_and_evaluates_both_variants(tmp_path):
    out = run("--cpu-tiny", "--steps", "2", "--pretrain-steps", "1", "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(report["variants"]) == {"qlora-nf4", "lora-bf16"}
    for name, row in report["variants"].items():
        assert row["steps"] == 2 and row["tokens_per_second"] > 0, name
        assert row["merge_max_abs_diff"] < 1e-3, name
        assert 0.0 <= row["pass_at_1_transformers"] <= 1.0
        assert (tmp_path / name / "merged" / "merge_report.json").is_file()
    assert "qlora-nf4" in out.stdout and "pass@1" in out.stdout
