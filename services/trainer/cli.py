"""Trainer commands: `model make-tiny`, `adapter merge`, and the root `train`."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from lorafleet.shared.errors import LorafleetError


def register(groups: dict[str, typer.Typer]) -> None:
    groups["model"].command("make-tiny")(make_tiny_cmd)
    groups["model"].command("build-tiny")(build_tiny_cmd)
    groups["adapter"].command("merge")(merge_cmd)
    groups["root"].command("train")(train_cmd)


def make_tiny_cmd(
    out: Annotated[Path, typer.Argument(help="directory to write the model and tokenizer to")],
    pretrain: Annotated[bool, typer.Option("--pretrain", help="the CPU-pretrained demo base (minutes, cached) instead of random init")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="cache of built models (default $LORAFLEET_CACHE_DIR or ~/.cache/lorafleet)")] = None,
) -> None:
    """Build a tiny Qwen2-architecture model + local BPE tokenizer (ChatML, pad != eos). No hub access."""
    from lorafleet.services.trainer.tiny_model import make_tiny

    path = make_tiny(out, pretrain=pretrain, cache_dir=cache_dir)
    typer.echo(f"tiny model ({'pretrained' if pretrain else 'random init'}) written to {path}")


def build_tiny_cmd(
    out: Annotated[Optional[Path], typer.Option(help="where to write it (default: the copy shipped in the package)")] = None,
    threads: Annotated[int, typer.Option(help="torch threads: part of what makes the build reproducible")] = 1,
) -> None:
    """Rebuild the pretrained tiny base that ships with the package (~10 min of CPU), from its
    recipe (services/trainer/tiny_model.py Recipe, seeded), with a sha256 manifest."""
    from lorafleet.services.trainer.tiny_model import SHIPPED_DIR, build_shipped

    manifest = build_shipped(out or SHIPPED_DIR, threads=threads)
    typer.echo(f"tiny base ({manifest['parameters']:,} parameters, recipe {manifest['recipe_key']}) written to "
               f"{out or SHIPPED_DIR} in {manifest['build_seconds']:.0f}s; train loss {manifest['train_loss']:.3f}")


def merge_cmd(
    adapter: Annotated[Path, typer.Argument(help="adapter directory (adapter_config.json + adapter_model.safetensors)")],
    out: Annotated[Path, typer.Option("--out", help="directory for the merged model")],
    base: Annotated[Optional[str], typer.Option(help="base model (default: the adapter's base_model_name_or_path)")] = None,
    tolerance: Annotated[float, typer.Option(help="max |logit difference| allowed, relative to the logit scale")] = 1e-3,
    dtype: Annotated[str, typer.Option(help="dtype of the merged weights: float32 | bfloat16 | float16")] = "float32",
) -> None:
    """Merge a LoRA adapter into its base, then verify: logits of the merged model (re-loaded
    from disk) must match base+adapter on a probe batch, or nothing is written."""
    from lorafleet.services.trainer.merge import merge_adapter

    report = merge_adapter(adapter, out, base_model=base, tolerance=tolerance, dtype=dtype)
    typer.echo(f"merged into {out}: max |Δlogit| {report['max_abs_diff']:.2e} "
               f"(scale {report['logit_scale']:.2f}, tolerance {report['tolerance']:.0e}) on "
               f"{report['probe_tokens']} probe tokens")


def train_cmd(
    config: Annotated[Path, typer.Argument(help="training config YAML, e.g. configs/tiny_python_lora.yaml")],
    wait: Annotated[bool, typer.Option("--wait", help="follow the run: progress bar until evaluated or failed")] = False,
    timeout: Annotated[float, typer.Option(help="with --wait: give up after this many seconds")] = 24 * 3600.0,
) -> None:
    """Publish `train.requested` for CONFIG (the services do the rest); --wait follows it."""
    from lorafleet.shared.config import load_config
    from lorafleet.shared.settings import get_settings

    cfg = load_config(config)
    settings = get_settings()
    code = asyncio.run(_train(settings, cfg, wait, timeout))
    raise typer.Exit(code)


async def _train(settings, cfg, wait: bool, timeout: float) -> int:
    from rich.console import Console

    from lorafleet.services.trainer.follow import follow_request, request_training
    from lorafleet.shared.bus import connect

    console = Console(highlight=False)
    nc = await connect(settings, name="lorafleet-train")
    try:
        js = nc.jetstream()
        event, seq = await request_training(js, settings, cfg)
        console.print(f"train.requested {cfg.adapter_name} (request {event.request_id})")
        if not wait:
            console.print(f"follow it with: lorafleet events tail --follow --request {event.request_id}")
            return 0
        async with contextlib.aclosing(follow_request(js, event.request_id, seq)) as events:
            return await _show(console, events, timeout)
    finally:
        await nc.close()


async def _show(console, events, timeout: float) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from lorafleet.services.trainer.follow import describe, kind

    progress = Progress(TextColumn("[bold]training[/bold]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console)
    task = None
    try:
        async with asyncio.timeout(timeout):
            with progress:
                async for event in events:
                    if kind(event) == "train.requested":
                        continue
                    if kind(event) == "training.progress":
                        if task is None:
                            task = progress.add_task("train", total=event.total_steps, info="")
                        progress.update(task, completed=event.step, total=event.total_steps, info=describe(event))
                        continue
                    progress.console.print(describe(event))
                    if kind(event).endswith(".failed"):
                        return 1
                    if kind(event) == "adapter.evaluated":
                        return 0
    except TimeoutError:
        raise LorafleetError(f"no final event within {timeout:.0f}s: check `lorafleet status` "
                             "(are the services running? `lorafleet up`)") from None
    return 1
