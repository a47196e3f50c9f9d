"""The vLLM offline backend on a locally built random-init model with a LoRA
adapter. Needs an NVIDIA GPU and vLLM's own environment (see docs/evaluator.md);
elsewhere it is skipped with the reason, and only the rank mapping is checked."""

import asyncio

import pytest

from lorafleet.services.evaluator.backends.vllm import max_lora_rank_for
from lorafleet.shared.errors import LorafleetError


def test_max_lora_rank_is_one_vllm_accepts():
    assert [max_lora_rank_for(r) for r in (1, 2, 8, 16, 32, 33, 64, 300, 512)] == [1, 8, 8, 16, 32, 64, 64, 320, 512]
    with pytest.raises(LorafleetError, match="above"):
        max_lora_rank_for(1024)


def _gpu_and_vllm() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _gpu_and_vllm(), reason="needs an NVIDIA GPU and vLLM installed in its own environment")
def test_vllm_base_and_lora_differ(tiny_pair, heldout_problems):
    from lorafleet.services.evaluator.backends.vllm import VLLMBackend
    from lorafleet.services.evaluator.evaluate import build_request
    from lorafleet.services.evaluator.models import SamplingParams

    base, adapter = tiny_pair
    _, problems = heldout_problems
    backend = VLLMBackend(str(base), adapter, lora_rank=8)
    reqs = [build_request(p, 0) for p in problems]
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=16)
    base_out = asyncio.run(backend.generate(reqs, "base", params.greedy()))
    lora_out = asyncio.run(backend.generate(reqs, "adapter", params.greedy()))
    assert all(g.texts and g.output_tokens[0] > 0 for g in base_out + lora_out)
    assert [g.texts for g in base_out] != [g.texts for g in lora_out]
