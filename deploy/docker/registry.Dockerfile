# registry: the adapter registry (JetStream KV, compare-and-set), A/B routing and
# promotion, and the production-outcome collector that requests retrains (one
# service). Core dependencies only: no torch in this image.
# Build from the repository root: docker build -f deploy/docker/registry.Dockerfile .
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
RUN pip install --no-cache-dir ./ \
    && useradd --create-home --uid 10001 lorafleet \
    && mkdir -p /var/lib/lorafleet && chown lorafleet /var/lib/lorafleet

USER 10001
WORKDIR /var/lib/lorafleet
ENTRYPOINT ["lorafleet"]
CMD ["serve", "registry"]
