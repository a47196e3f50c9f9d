# trainer: (Q)LoRA SFT with transformers + peft + trl. The PyPI torch wheel for
# linux/x86_64 is the CUDA build, so the same image trains on a GPU node
# (bitsandbytes NF4 via the `gpu` extra) and on CPU for tiny models.
# Build from the repository root: docker build -f deploy/docker/trainer.Dockerfile .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LORAFLEET_DATA_DIR=/var/lib/lorafleet \
    HF_HOME=/var/lib/lorafleet/hf

WORKDIR /opt/lorafleet
COPY pyproject.toml README.md ./
COPY lorafleet ./lorafleet
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir "./[trainer,gpu]" \
    && useradd --create-home --uid 10001 lorafleet \
    && mkdir -p /var/lib/lorafleet && chown lorafleet /var/lib/lorafleet

USER 10001
WORKDIR /var/lib/lorafleet
ENTRYPOINT ["lorafleet"]
CMD ["serve", "trainer"]
