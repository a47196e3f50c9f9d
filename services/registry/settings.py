"""Registry and collector settings (`LORAFLEET_REGISTRY_*` env vars)."""

from __future__ import annotations

from pathlib import Path

from croniter import croniter
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import abtest


class RegistrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORAFLEET_REGISTRY_", extra="ignore")

    bucket: str = Field("lorafleet-registry", description="JetStream KV bucket holding one entry per adapter name")
    pool_bucket: str = Field("lorafleet-pool", description="KV bucket of the production training pool")
    history: int = Field(16, ge=1, le=64, description="KV revisions kept per key (for audits)")
    cas_retries: int = Field(200, ge=1, description="compare-and-set attempts before giving up (redelivered)")

    # A/B test: an always-valid sequential test (abtest.py, docs/registry.md); defaults = abtest.evaluate's
    ab_auto_start: bool = Field(True, description="start an A/B test when a version passes the gate")
    ab_traffic: float = Field(0.1, ge=0.0, le=1.0, description="share of requests routed to the candidate")
    ab_alpha: float = Field(abtest.ALPHA, gt=0.0, lt=0.5,
                            description="chance that a test of two equal arms ever promotes or rolls back (both together)")
    ab_tau: float = Field(abtest.TAU, gt=0.0, lt=1.0,
                          description="mixing sd of the success-rate difference: effects near it are found fastest")
    ab_min_samples: int = Field(abtest.MIN_SAMPLES, ge=1, description="outcomes per arm before any decision (burn-in)")
    ab_max_samples: int | None = Field(None, ge=1, description="per arm; stop the test as inconclusive after this")
    ab_min_effect: float = Field(0.0, ge=0.0, lt=1.0, description="success-rate margin the candidate must beat")
    ab_guardrail_alpha: float = Field(abtest.GUARDRAIL_ALPHA, gt=0.0, lt=0.5, description="level of each guardrail")
    ab_max_error_increase: float = Field(0.0, ge=0.0, lt=1.0,
                                         description="roll back when the candidate's error rate exceeds the control's by more")
    ab_error_tau: float = Field(abtest.ERROR_TAU, gt=0.0, lt=1.0, description="mixing sd of the error-rate difference")
    ab_max_latency_ratio: float = Field(abtest.MAX_LATENCY_RATIO, ge=0.0,
                                        description="roll back when candidate/control mean latency exceeds this; 0 disables")
    ab_latency_tau: float = Field(abtest.LATENCY_TAU, gt=0.0, description="mixing sd of the latency ratio")
    ab_srm_alpha: float = Field(abtest.SRM_ALPHA, gt=0.0, lt=0.5, description="level of the sample-ratio-mismatch test")
    ab_split_robust: bool = Field(True, description="promote only if the candidate wins with its missing outcomes "
                                                    "(against the traffic share) counted as failures")
    ab_srm_concentration: float = Field(abtest.SRM_CONCENTRATION, gt=0.0,
                                        description="Dirichlet prior concentration of the sample-ratio test")

    # Outcome recording
    outcome_batch: int = Field(2000, ge=1, description="outcomes applied per compare-and-set write")
    outcome_linger_ms: float = Field(5.0, ge=0.0, description="wait this long for a batch to fill")

    # Collector
    min_confidence: float = Field(0.9, ge=0.0, le=1.0, description="keep successful outcomes above this confidence")
    require_tests: bool = Field(False, description="keep only outcomes that carry tests (and pass them)")
    max_solutions_per_problem: int = Field(3, ge=1)
    retrain_schedule: str = Field("0 0 1 * *", description="cron; default monthly (1st, 00:00 UTC)")
    retrain_pool_threshold: int = Field(500, ge=1, description="new pool entries that trigger a retrain")
    retrain_min_new: int = Field(1, ge=0, description="a scheduled retrain needs at least this many new entries")
    retrain_check_interval_s: float = Field(10.0, gt=0.0)
    retrain_during_ab: bool = Field(False, description="let a retrain start while a candidate's A/B test is open "
                                                        "(its adapter would then replace the candidate's test)")
    retrain_configs: dict[str, Path] = Field(
        default_factory=dict,
        description='adapter name -> training config YAML for retrains, e.g. {"python-lora": "configs/python_lora.yaml"}; '
        "default: the config the active version was trained with",
    )

    @field_validator("retrain_schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (e.g. '0 0 1 * *' = monthly)")
        return value
