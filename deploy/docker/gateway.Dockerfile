# gateway: the OpenAI-compatible endpoint for every registered adapter. Routes by the
# registry's A/B test, forwards to vLLM (or `lorafleet model serve`), judges attached
# tests in the sandbox and publishes production.outcome. Core dependencies only: no torch.
# Build from the repository root: docker build -f deploy/docker/gateway.Dockerfile .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LORAFLEET_DATA_DIR=/var/lib/lorafleet \
    LORAFLEET_GATEWAY_HOST=0.0.0.0 \
    LORAFLEET_GATEWAY_PORT=8400

WORKDIR /opt/lorafleet
COPY pyproject.toml README.md ./
COPY lorafleet ./lorafleet
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir "./[gateway]" \
    && useradd --create-home --uid 10001 lorafleet \
    && mkdir -p /var/lib/lorafleet/gateway && chown -R lorafleet /var/lib/lorafleet
# The sandbox's C engine (judging attached tests), compiled here so the image needs no compiler.
ENV LORAFLEET_CACHE_DIR=/opt/lorafleet/cache
# The compiler only lives for this layer (purged below), so its exact Debian version doesn't matter.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && LORAFLEET_SANDBOX_ENGINE=c python -c "from lorafleet.shared.sandbox.zygote_build import zygote_library; print(zygote_library())" \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && chown -R lorafleet /opt/lorafleet/cache

USER 10001
WORKDIR /var/lib/lorafleet
EXPOSE 8400
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8400/health', timeout=2)"]
ENTRYPOINT ["lorafleet"]
CMD ["serve", "gateway"]
