# vLLM OpenAI-compatible server with runtime LoRA loading, for the evaluator and
# enrich. vLLM pins its own torch and an older transformers, so it never shares an
# image with the trainer. Needs an NVIDIA GPU at run time.
# Build: docker build -f deploy/docker/vllm.Dockerfile deploy/docker
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models/hf \
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=1

RUN pip install --no-cache-dir vllm==0.33.0 \
    && useradd --create-home --uid 10001 vllm \
    && mkdir -p /models /adapters && chown vllm /models /adapters

USER 10001
WORKDIR /models
EXPOSE 8000
ENTRYPOINT ["vllm", "serve"]
# Override with the base model to serve, e.g. Qwen/Qwen2.5-Coder-7B-Instruct-AWQ.
CMD ["Qwen/Qwen2.5-Coder-7B-Instruct", "--host", "0.0.0.0", "--port", "8000", "--enable-lora", "--max-lora-rank", "64", "--max-loras", "4"]
