"""Generation backends behind one interface (`Backend`). Each module imports its
heavy dependency lazily, so the evaluator package imports without torch or vLLM."""

from lorafleet.services.evaluator.backends.base import Backend, BackendError

__all__ = ["Backend", "BackendError"]


def make_backend(
    kind: str,
    *,
    base_model: str,
    adapter_path: str | None = None,
    adapter_name: str | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    lora_rank: int = 64,
    concurrency: int = 8,
    timeout_s: float = 300.0,
    max_retries: int = 5,
    batch_size: int = 8,
    seed: int = 0,
) -> Backend:
    """One place that turns evaluation settings into a backend."""
    from lorafleet.shared.errors import LorafleetError

    if kind in ("transformers", "vllm"):
        from lorafleet.services.trainer.tiny_model import resolve_base_model

        base_model = resolve_base_model(base_model)  # tiny://pretrained -> its cached directory
    if kind == "transformers":
        from lorafleet.services.evaluator.backends.transformers import TransformersBackend

        return TransformersBackend(base_model, adapter_path, batch_size=batch_size)
    if kind == "openai":
        from lorafleet.services.evaluator.backends.openai import OpenAIBackend

        if not endpoint:
            raise LorafleetError("the openai backend needs an endpoint: pass --endpoint http://HOST:PORT/v1 "
                                 "(or evaluation.endpoint in the config)")
        return OpenAIBackend(endpoint, base_model, adapter_name, api_key=api_key, concurrency=concurrency,
                             timeout_s=timeout_s, max_retries=max_retries)
    if kind == "vllm":
        from lorafleet.services.evaluator.backends.vllm import VLLMBackend

        return VLLMBackend(base_model, adapter_path, adapter_name=adapter_name or "adapter", lora_rank=lora_rank, seed=seed)
    raise LorafleetError(f"unknown backend {kind!r}: use transformers, openai or vllm")
