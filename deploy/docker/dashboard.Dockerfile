# dashboard: the web pages over the bus (runs, training curves, evaluations, registry and
# A/B tests, service health). Stateless: run any number behind a load balancer.
# Core dependencies only (aiohttp; the charting library is vendored): no torch in this image.
# Build from the repository root: docker build -f deploy/docker/dashboard.Dockerfile .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LORAFLEET_DATA_DIR=/var/lib/lorafleet \
    LORAFLEET_DASHBOARD_HOST=0.0.0.0 \
    LORAFLEET_DASHBOARD_PORT=8300

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
EXPOSE 8300
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8300/api/health', timeout=2)"]
ENTRYPOINT ["lorafleet"]
CMD ["serve", "dashboard"]
