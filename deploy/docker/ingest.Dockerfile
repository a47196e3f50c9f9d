# ingest: loads sources, verifies every solution in the sandbox, dedups, splits.
# Build from the repository root: docker build -f deploy/docker/ingest.Dockerfile .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LORAFLEET_DATA_DIR=/var/lib/lorafleet

WORKDIR /opt/lorafleet
COPY pyproject.toml README.md ./
COPY lorafleet ./lorafleet
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir "./[ingest]" \
    && useradd --create-home --uid 10001 lorafleet \
    && mkdir -p /var/lib/lorafleet && chown lorafleet /var/lib/lorafleet
# The sandbox's C engine, compiled here so the image needs no compiler. As uid 10001 the sandbox runs
# rootless (a user namespace per server, the same layers as root): the container needs the settings in
# docs/sandbox.md "Containers" (deploy/k8s: hostUsers: false, procMount: Unmasked, the seccomp profile
# sandbox-seccomp.json; compose: security_opt). Without them the service refuses to start unless
# LORAFLEET_SANDBOX_ALLOW_REDUCED=1.
ENV LORAFLEET_CACHE_DIR=/opt/lorafleet/cache
# The compiler only lives for this layer (purged below), so its exact Debian version doesn't matter.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && LORAFLEET_SANDBOX_ENGINE=c python -c "from lorafleet.shared.sandbox.zygote_build import zygote_library; print(zygote_library())" \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && chown -R lorafleet /opt/lorafleet/cache

USER 10001
WORKDIR /var/lib/lorafleet
ENTRYPOINT ["lorafleet"]
CMD ["serve", "ingest"]
