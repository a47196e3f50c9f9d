"""Durable checkpoints: every save of a job goes to the artifact store under the job's key,
so a redelivered job resumes on any replica, even one with an empty disk.

Layout in the store (`prefix` = `checkpoints/<adapter>/<input event id>`):

    <prefix>/checkpoint-<step>   one directory artifact per save (adapter weights, optimizer,
                                 scheduler, RNG states, trainer_state.json with the data position,
                                 lorafleet_checkpoint.json with the config hash)
    <prefix>/manifest.json       which of them exist, newest last; written after each upload

The manifest is the pointer: a checkpoint is resumable once it is listed, so a crash mid-upload
leaves the previous one in charge. A checkpoint made under another config hash is never resumed.

Pure parts (`Manifest`, `retain`, `resume_choice`, `check_local`) are unit-tested without a store;
`DurableCheckpoints` is the thin adapter over the artifact store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

META = "lorafleet_checkpoint.json"  # written into every checkpoint directory
PREFIX = "checkpoint"


class CheckpointEntry(BaseModel):
    step: int
    name: str  # artifact name
    sha256: str
    size_bytes: int
    config_sha256: str
    world_size: int = 1
    saved_at: float = Field(default_factory=time.time)


class Manifest(BaseModel):
    job: str
    checkpoints: list[CheckpointEntry] = Field(default_factory=list)

    def newest(self) -> CheckpointEntry | None:
        return max(self.checkpoints, key=lambda e: e.step, default=None)

    def at(self, step: int | None) -> CheckpointEntry | None:
        return next((e for e in self.checkpoints if e.step == step), None)


def step_of(path: str | Path) -> int:
    return int(Path(path).name.rsplit("-", 1)[-1])


def checkpoint_meta(config_sha256: str, state: Any, world_size: int, samples_per_step: int) -> dict[str, Any]:
    """What lorafleet_checkpoint.json records (the data position is also in trainer_state.json)."""
    return {"config_sha256": config_sha256, "step": state.global_step, "epoch": state.epoch,
            "world_size": world_size, "samples_seen": state.global_step * samples_per_step,
            "best_step": state.best_global_step}


def retain(manifest: Manifest, entry: CheckpointEntry, keep: int, best_step: int | None) -> tuple[Manifest, list[CheckpointEntry]]:
    """Add `entry`; keep the newest `keep` and the best (the one that ships), as HF does on disk.
    Returns the new manifest and the entries to delete."""
    entries = sorted([e for e in manifest.checkpoints if e.step != entry.step] + [entry], key=lambda e: e.step)
    kept_steps = {e.step for e in entries[-keep:]} | ({best_step} if best_step is not None else set())
    kept = [e for e in entries if e.step in kept_steps]
    dropped = [e for e in entries if e.step not in kept_steps]
    return Manifest(job=manifest.job, checkpoints=kept), dropped


def resume_choice(manifest: Manifest, config_sha256: str) -> tuple[CheckpointEntry | None, str | None]:
    """The newest checkpoint to resume from, or None and why not (None, None: nothing saved yet)."""
    newest = manifest.newest()
    if newest is None:
        return None, None
    if newest.config_sha256 != config_sha256:
        return None, (f"not resuming checkpoint-{newest.step} of job {manifest.job}: it was made with config "
                      f"{newest.config_sha256[:12]}, this job's config is {config_sha256[:12]}; starting over at step 0")
    return newest, None


def check_local(checkpoint_dir: Path, config_sha256: str) -> tuple[str | None, str | None]:
    """The newest local checkpoint to resume from, or (None, reason). A checkpoint of another
    config (or one without lorafleet_checkpoint.json: written by something else, or cut short
    before it) is removed, so neither resuming nor HF's rotation ever picks it up."""
    if not checkpoint_dir.is_dir():
        return None, None
    found = sorted((p for p in checkpoint_dir.glob(f"{PREFIX}-*") if p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit()),
                   key=step_of)
    reason = None
    for path in reversed(found):
        meta = path / META
        saved = json.loads(meta.read_text()).get("config_sha256") if meta.is_file() else None
        if saved == config_sha256:
            return str(path), reason
        why = (f"made with config {saved[:12]}, this job's config is {config_sha256[:12]}" if saved
               else f"it has no {META} (incomplete)")
        reason = reason or f"not resuming local {path.name}: {why}; starting over at step 0"
        log.warning("removing %s: %s", path, why)
        shutil.rmtree(path, ignore_errors=True)
    return None, reason


def fix_up(local_dir: Path) -> None:
    """Downloaded checkpoints: trainer_state.json names the best checkpoint by the path it had on the
    replica that saved it; point it at this disk (HF drops a best checkpoint it can't find), and
    order mtimes by step (the tars carry mtime 0; HF rotates by mtime)."""
    now = time.time()
    found = sorted((p for p in local_dir.glob(f"{PREFIX}-*") if p.is_dir()), key=step_of)
    for i, path in enumerate(found):
        os.utime(path, (now - len(found) + i, now - len(found) + i))
        state_file = path / "trainer_state.json"
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            best = state.get("best_model_checkpoint")
            if best:
                state["best_model_checkpoint"] = str(local_dir / Path(best).name)
                tmp = state_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(state, indent=2))
                tmp.replace(state_file)


class DurableCheckpoints:
    """The job's checkpoints in the artifact store (object store or local directory)."""

    def __init__(self, store: Any, prefix: str, keep: int) -> None:
        self.store = store
        self.prefix = prefix.rstrip("/")
        self.keep = keep

    @property
    def manifest_name(self) -> str:
        return f"{self.prefix}/manifest.json"

    async def manifest(self) -> Manifest:
        from lorafleet.shared.artifacts import ArtifactError

        with tempfile.TemporaryDirectory(prefix="lorafleet-manifest-") as tmp:
            try:
                path = await self.store.get_file(self.store.uri_of(self.manifest_name), Path(tmp) / "manifest.json")
            except ArtifactError:
                return Manifest(job=self.prefix)
            return Manifest.model_validate_json(path.read_text())

    async def _write_manifest(self, manifest: Manifest) -> None:
        with tempfile.TemporaryDirectory(prefix="lorafleet-manifest-") as tmp:
            path = Path(tmp) / "manifest.json"
            path.write_text(manifest.model_dump_json(indent=2))
            await self.store.put_file(path, self.manifest_name)

    async def save(self, checkpoint: Path) -> CheckpointEntry:
        """Upload one checkpoint directory, list it, and drop the ones past `keep` (never the best)."""
        meta = json.loads((checkpoint / META).read_text())
        name = f"{self.prefix}/{checkpoint.name}"
        started = time.monotonic()
        ref = await self.store.put_dir(checkpoint, name)
        entry = CheckpointEntry(step=meta["step"], name=name, sha256=ref.sha256, size_bytes=ref.size_bytes,
                                config_sha256=meta["config_sha256"], world_size=meta.get("world_size", 1))
        manifest, dropped = retain(await self.manifest(), entry, self.keep, meta.get("best_step"))
        await self._write_manifest(manifest)
        for old in dropped:  # after the manifest stops naming them
            await self.store.delete(old.name)
        log.info("checkpoint-%d of %s in the artifact store (%.1f MB, %.1fs)", entry.step, self.prefix,
                 entry.size_bytes / 1e6, time.monotonic() - started)
        return entry

    async def restore(self, local_dir: Path, config_sha256: str) -> tuple[int | None, str | None]:
        """Put the newest durable checkpoint (and the best, which ships) into `local_dir`.
        Returns (step, None), or (None, why not). Durable is the truth: local ones are replaced."""
        manifest = await self.manifest()
        entry, reason = resume_choice(manifest, config_sha256)
        if reason:
            log.warning("%s", reason)
            await self.clear(manifest)  # never resumable by this job: their steps would shadow the new run's
            return None, reason
        if entry is None:
            return None, None
        shutil.rmtree(local_dir, ignore_errors=True)
        local_dir.mkdir(parents=True, exist_ok=True)
        best_step = json.loads((await self._fetch(entry, local_dir) / META).read_text()).get("best_step")
        best = manifest.at(best_step)
        if best is not None and best.step != entry.step:
            await self._fetch(best, local_dir)
        fix_up(local_dir)
        log.info("resuming %s from checkpoint-%d of the artifact store", self.prefix, entry.step)
        return entry.step, None

    async def _fetch(self, entry: CheckpointEntry, local_dir: Path) -> Path:
        from lorafleet.shared.events import ArtifactRef

        ref = ArtifactRef(uri=self.store.uri_of(entry.name), sha256=entry.sha256, size_bytes=entry.size_bytes)
        return await self.store.get_dir(ref, local_dir / Path(entry.name).name)

    async def clear(self, manifest: Manifest | None = None) -> None:
        """Delete every checkpoint of the job and its manifest (the job is done, or they are unusable)."""
        manifest = manifest or await self.manifest()
        for entry in manifest.checkpoints:
            await self.store.delete(entry.name)
        await self.store.delete(self.manifest_name)
