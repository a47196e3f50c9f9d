"""`lorafleet data enrich` (enrichment without the bus) and `lorafleet model serve` (a local
OpenAI-compatible server for a transformers model + peft adapters)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from lorafleet.shared.errors import ConfigError


def enrich(
    dataset_dir: Annotated[Path, typer.Argument(help="dataset directory with train.jsonl / eval.jsonl")],
    endpoint: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (default: config, then $LORAFLEET_ENRICH_ENDPOINT)")] = None,
    model: Annotated[Optional[str], typer.Option(help="model name the endpoint serves (default: config, then $LORAFLEET_ENRICH_MODEL)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output dataset directory (default: DATASET_DIR-enriched beside it)")] = None,
    concurrency: Annotated[Optional[int], typer.Option(min=1, help="requests in flight (default 16)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="training config YAML whose `enrich` section to use")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="sampling temperature (default 0.3)")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="max tokens per trace (default 1024)")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="seconds per request (default 120)")] = None,
    max_retries: Annotated[Optional[int], typer.Option(help="retries per request (default 6)")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="env variable holding the API key (default LORAFLEET_ENRICH_API_KEY)")] = None,
    allow_fallback: Annotated[Optional[bool], typer.Option("--allow-fallback/--no-fallback", help="give failed examples the fallback text")] = None,
    max_failed_fraction: Annotated[Optional[float], typer.Option(help="fail the run when more examples than this fail transiently (default 0.1)")] = None,
) -> None:
    """Add reasoning traces to a dataset through an OpenAI-compatible endpoint (cached, resumable)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from lorafleet.services.enrich.cache import AnswerCache
    from lorafleet.services.enrich.dataset import enrich_dataset, passthrough_dataset
    from lorafleet.services.enrich.pipeline import resolve_target
    from lorafleet.shared.config import EnrichSection, load_config
    from lorafleet.shared.settings import get_settings

    section = load_config(config).enrich if config else EnrichSection()
    overrides = {
        "endpoint": endpoint, "model": model, "concurrency": concurrency, "temperature": temperature,
        "max_tokens": max_tokens, "timeout_s": timeout, "max_retries": max_retries,
        "api_key_env": api_key_env, "allow_fallback": allow_fallback, "max_failed_fraction": max_failed_fraction,
    }
    try:
        cfg = EnrichSection.model_validate({**section.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
    except ValueError as exc:
        raise ConfigError(f"enrich options: {exc}") from None
    dataset_dir = dataset_dir.resolve()
    dest = (out or dataset_dir.with_name(dataset_dir.name + "-enriched")).resolve()
    if dest == dataset_dir:
        raise ConfigError(f"--out {dest} is the input directory: write the enriched dataset somewhere else")
    console = Console(stderr=True)
    target = resolve_target(cfg)
    if target is None:
        stats = passthrough_dataset(dataset_dir, dest, "no endpoint: pass --endpoint or set LORAFLEET_ENRICH_ENDPOINT")
        console.print(f"[yellow]no enrichment endpoint given: copied the dataset unchanged to {dest}[/]")
        typer.echo(json.dumps(stats, indent=2))
        return

    # The answer cache lives under the data dir (`lorafleet --data-dir`, $LORAFLEET_DATA_DIR).
    with AnswerCache.in_data_dir(get_settings().data_dir) as cache, Progress(
        TextColumn("enrich"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    ) as bar:
        task = bar.add_task("enrich", total=None, counts="")

        def on_progress(stats) -> None:
            o = stats.outcomes
            bar.update(task, completed=stats.total, counts=(
                f"new {o['generated']} cached {o['cached']} kept {o['passthrough']} "
                f"rejected {o['rejected']} failed {o['failed']}"
            ))

        stats = asyncio.run(enrich_dataset(
            dataset_dir, dest, cfg, target, cache, progress=on_progress,
            on_total=lambda n: bar.update(task, total=n),
        ))
    console.print(f"enriched dataset written to {dest}")
    typer.echo(json.dumps(stats, indent=2))


def serve(
    model_dir: Annotated[str, typer.Argument(help="a local transformers model directory, or tiny://pretrained / tiny://random")],
    adapter: Annotated[Optional[list[str]], typer.Option("--adapter", help="NAME=PATH of a peft adapter, served as model NAME (repeatable)")] = None,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0 = a free one; the URL is printed)")] = 8000,
    name: Annotated[Optional[str], typer.Option(help="model name of the base model (default: the directory name)")] = None,
    engine: Annotated[str, typer.Option(help="transformers (built in, one request at a time) | vllm (vLLM's server from .venv-vllm: `make setup-vllm`)")] = "transformers",
    max_lora_rank: Annotated[Optional[int], typer.Option(help="vllm: largest adapter rank it can load (default: from --adapter / --adapter-dir, else 64)")] = None,
    max_loras: Annotated[int, typer.Option(min=1, help="vllm: adapters in one batch")] = 4,
    adapter_dir: Annotated[Optional[Path], typer.Option(help="vllm: directory of adapters loaded at run time; their ranks count for --max-lora-rank")] = None,
    dtype: Annotated[str, typer.Option(help="vllm: auto (the model's, float32 on CPU) | float32 | bfloat16 | float16")] = "auto",
    kv_cache_gib: Annotated[int, typer.Option(min=1, help="vllm on CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE)")] = 1,
    base_adapter: Annotated[bool, typer.Option("--base-adapter/--no-base-adapter", help="vllm: serve the base through a zero adapter, so mixed base/LoRA batches are correct")] = True,
) -> None:
    """Serve a local model (+ LoRA adapters by name) on an OpenAI-compatible /v1/chat/completions."""
    from lorafleet.services.enrich.model_server import parse_adapters, serve_forever

    adapters = parse_adapters(adapter or [])
    if engine == "vllm":
        from lorafleet.services.trainer.tiny_model import resolve_base_model
        from lorafleet.shared.nats_server import free_port
        from lorafleet.shared.vllm_server import VLLMServerConfig, serve_foreground

        cfg = VLLMServerConfig(model=resolve_base_model(model_dir), host=host, port=port or free_port(), name=name,
                               adapters=adapters, adapter_dir=adapter_dir, max_lora_rank=max_lora_rank, max_loras=max_loras,
                               dtype=dtype, kv_cache_gib=kv_cache_gib, base_adapter=base_adapter)
        raise typer.Exit(serve_foreground(cfg, echo=lambda line: typer.echo(line, err=False)))
    if engine != "transformers":
        raise ConfigError(f"--engine {engine!r}: use transformers or vllm")
    serve_forever(model_dir, adapters=adapters, host=host, port=port, base_name=name)


def register(groups: dict[str, typer.Typer]) -> None:
    groups["data"].command("enrich")(enrich)
    groups["model"].command("serve")(serve)
