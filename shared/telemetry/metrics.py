"""Every lorafleet metric, in one place, named `lorafleet_*` with a `service` label.

Labels stay bounded: event types, verdicts, adapter names and versions, arms, backends; never a
request id or an event id. The objects live in prometheus_client's default registry, so one
process (one service replica) exposes them all on /metrics; a metric a process never touches
exposes only its HELP line.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Handler durations run from milliseconds (registry) to hours (training).
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# ---------------------------------------------------------------- every service (the runner)
EVENTS_HANDLED = Counter("lorafleet_events_handled_total", "Deliveries handled and acked", ["service", "event_type"])
EVENTS_FAILED = Counter("lorafleet_events_failed_total", "Deliveries whose handler raised (nak or dead letter)",
                        ["service", "event_type"])
EVENTS_DEAD_LETTERED = Counter("lorafleet_events_dead_lettered_total", "Messages sent to the dead-letter subject",
                               ["service", "reason"])
EVENTS_PUBLISHED = Counter("lorafleet_events_published_total", "Events this process published", ["service", "event_type"])
REDELIVERIES = Counter("lorafleet_redeliveries_total", "Deliveries after the first of the same message",
                       ["service", "event_type"])
HANDLER_SECONDS = Histogram("lorafleet_handler_duration_seconds", "Handler wall time per delivery",
                            ["service", "event_type"], buckets=DURATION_BUCKETS)
IN_FLIGHT = Gauge("lorafleet_handlers_in_flight", "Handlers running now", ["service"])

# ---------------------------------------------------------------- trainer
TRAINER_STEP = Gauge("lorafleet_trainer_step", "Global step of the running job", ["service", "adapter"])
TRAINER_LOSS = Gauge("lorafleet_trainer_loss", "Last logged training loss", ["service", "adapter"])
TRAINER_TOKENS_PER_S = Gauge("lorafleet_trainer_tokens_per_second", "Training throughput", ["service", "adapter"])
TRAINER_CHECKPOINT_TIME = Gauge("lorafleet_trainer_last_checkpoint_timestamp_seconds",
                                "Unix time of the last checkpoint (age = time() - this)", ["service", "adapter"])

# ---------------------------------------------------------------- evaluator
EVAL_SAMPLES = Counter("lorafleet_evaluator_samples_total", "Completions generated", ["service", "model"])
EVAL_SAMPLES_PER_S = Gauge("lorafleet_evaluator_samples_per_second", "Generation rate of the last shard",
                           ["service", "model"])
SANDBOX_RUNS = Counter("lorafleet_sandbox_runs_total", "Programs judged in the sandbox, by verdict", ["service", "verdict"])
EVAL_PASS_AT_1 = Gauge("lorafleet_evaluator_pass_at_1", "pass@1 of the last evaluation", ["service", "adapter", "model"])

# ---------------------------------------------------------------- registry
REGISTRY_OUTCOMES = Counter("lorafleet_registry_outcomes_total", "Production outcomes counted",
                            ["service", "adapter", "version", "arm", "success"])
REGISTRY_AB_STATE = Gauge("lorafleet_registry_ab_running", "1 while an A/B test runs for the adapter",
                          ["service", "adapter"])
REGISTRY_ROUTE_SECONDS = Histogram("lorafleet_registry_route_seconds", "Time to route one request",
                                   ["service"], buckets=LATENCY_BUCKETS)

# ---------------------------------------------------------------- gateway
GATEWAY_REQUESTS = Counter("lorafleet_gateway_requests_total", "Requests served",
                           ["service", "adapter", "version", "arm", "status"])
GATEWAY_SECONDS = Histogram("lorafleet_gateway_request_seconds", "Request latency through the gateway",
                            ["service", "adapter", "version", "arm"], buckets=LATENCY_BUCKETS)
GATEWAY_TOKENS = Counter("lorafleet_gateway_tokens_total", "Tokens served", ["service", "adapter", "version", "arm", "kind"])
GATEWAY_BACKEND_ERRORS = Counter("lorafleet_gateway_backend_errors_total", "Failed calls to an inference backend",
                                 ["service", "backend"])
