"""What operators' tools read: Prometheus metrics (metrics.py), /metrics /health /ready (health.py),
OpenTelemetry traces carried in every event's headers (tracing.py)."""
