"""Artifact store round trips: object store (real nats-server) and local directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorafleet.shared.artifacts import ArtifactError, LocalArtifactStore, ObjectStoreArtifacts, open_store, sha256_file
from lorafleet.shared.events import ArtifactRef


def make_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "train.jsonl").write_text('{"a": 1}\n' * 100)
    (root / "sub" / "weights.bin").write_bytes(os.urandom(300_000))  # several 128 KiB chunks
    (root / "sub" / "deeper" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "sub" / "deeper" / "run.sh").chmod(0o755)
    return root


def tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture(params=["object_store", "local"])
async def store(request, settings, js):
    store = open_store(settings.model_copy(update={"artifact_backend": request.param}), js=js)
    assert isinstance(store, ObjectStoreArtifacts if request.param == "object_store" else LocalArtifactStore)
    yield store
    await store.close()


async def test_file_round_trip_with_sha256(store, tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(400_000))
    ref = await store.put_file(src, "runs/r1/a.bin")
    assert ref.sha256 == sha256_file(src) and ref.size_bytes == 400_000
    out = await store.get_file(ref, tmp_path / "out" / "a.bin")
    assert out.read_bytes() == src.read_bytes()
    assert await store.get_file(ref.uri, tmp_path / "again.bin")  # by URI alone, still verified
    assert not list((tmp_path / "out").glob(".*partial"))


async def test_directory_round_trip_is_deterministic(store, tmp_path):
    src = make_tree(tmp_path / "adapter")
    ref = await store.put_dir(src, "adapters/python-lora/v1.tar")
    (src / "train.jsonl").touch()  # a new mtime: same content must give the same hash
    again = await store.put_dir(src, "adapters/python-lora/v1-again.tar")
    assert again.sha256 == ref.sha256
    dest = tmp_path / "restored"
    dest.mkdir()
    (dest / "stale.txt").write_text("from an earlier attempt")
    await store.get_dir(ref, dest)
    assert tree(dest) == tree(src)
    assert os.access(dest / "sub" / "deeper" / "run.sh", os.X_OK)


async def test_wrong_sha256_is_refused_and_nothing_written(store, tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("hello")
    ref = await store.put_file(src, "x/a.txt")
    bad = ArtifactRef(uri=ref.uri, sha256="f" * 64, size_bytes=5)
    with pytest.raises(ArtifactError, match="sha256"):
        await store.get_file(bad, tmp_path / "dest.txt")
    assert not (tmp_path / "dest.txt").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


async def test_missing_artifact_and_bad_names_are_clear_errors(store, tmp_path):
    uri = store.uri_of("nope/missing.bin") if isinstance(store, ObjectStoreArtifacts) else f"file://{tmp_path}/missing.bin"
    with pytest.raises(ArtifactError, match="not found"):
        await store.get_file(uri, tmp_path / "d")
    for name in ("", "/abs", "a/../b"):
        with pytest.raises(ArtifactError, match="bad artifact name"):
            await store.put_file(__file__, name)


async def test_object_store_reads_local_uris_and_local_refuses_object_uris(settings, js, tmp_path):
    local = LocalArtifactStore(tmp_path / "local")
    src = tmp_path / "f.txt"
    src.write_text("x" * 1000)
    lref = await local.put_file(src, "f.txt")
    objects = open_store(settings, js=js)
    assert (await objects.get_file(lref, tmp_path / "g.txt")).read_text() == "x" * 1000
    oref = await objects.put_file(src, "f.txt")
    assert oref.sha256 == lref.sha256
    with pytest.raises(ArtifactError, match="LORAFLEET_ARTIFACT_BACKEND=object_store"):
        await local.get_file(oref, tmp_path / "h.txt")
    assert await objects.stat(oref) == oref
    assert await objects.stat(objects.uri_of("absent")) is None


async def test_object_store_connects_by_itself_without_a_js_context(settings, tmp_path):
    src = tmp_path / "f.txt"
    src.write_text("standalone")
    async with open_store(settings) as store:
        ref = await store.put_file(src, "solo/f.txt")
        assert (await store.get_file(ref, tmp_path / "o.txt")).read_text() == "standalone"


def test_200_mb_round_trip_with_bounded_memory(nats_url, tmp_path):
    size = 200 * 1024 * 1024
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        block = os.urandom(1024 * 1024)
        for i in range(size // len(block)):
            fh.write(block[:-4] + i.to_bytes(4, "big"))  # distinct blocks, cheap to make
    script = Path(__file__).with_name("big_roundtrip.py")
    proc = subprocess.run([sys.executable, str(script), str(big)], capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, LORAFLEET_NATS_URL=nats_url))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ref"]["size_bytes"] == size
    assert result["ref"]["sha256"] == result["source_sha256"] == result["back_sha256"]
    # Imports alone peak near 50 MB here; a 200 MB file held in memory would be far above the limit.
    assert result["peak_rss_bytes"] < 128 * 1024 * 1024, f"peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB"
