"""Artifact store: files and directories by URI with a sha256; events carry the reference.

Two backends behind one interface:
- `ObjectStoreArtifacts`: the JetStream object store (default; no extra server).
  URIs `nats-obj://<bucket>/<name>`. Streams 128 KiB chunks both ways.
- `LocalArtifactStore`: a directory. URIs `file:///abs/path`.

A directory travels as one deterministic tar (sorted, zeroed mtimes/owners), so
the same content always has the same sha256. Every download is verified and
lands under a temporary name first, then is renamed: nothing half-written.
Either backend reads `file://` URIs; `nats-obj://` needs the object store.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote, unquote, urlparse

from lorafleet.shared.errors import ConfigError, LorafleetError
from lorafleet.shared.events import ArtifactRef

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from lorafleet.shared.settings import Settings

OBJ_SCHEME = "nats-obj"
CHUNK = 1024 * 1024
FETCH_CHUNKS = 8  # object-store chunks (128 KiB each) held in memory at most while downloading


class ArtifactError(LorafleetError):
    """An artifact is missing, corrupt (sha256 mismatch) or addressed by a bad URI."""


def _check_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ArtifactError(f"bad artifact name {name!r}: use a relative path like 'datasets/<request_id>/dataset.tar'")
    return name


def _uri_and_sha(ref_or_uri: ArtifactRef | str) -> tuple[str, str | None]:
    if isinstance(ref_or_uri, ArtifactRef):
        return ref_or_uri.uri, ref_or_uri.sha256
    return ref_or_uri, None


def file_uri(path: Path) -> str:
    return "file://" + quote(str(path.resolve()))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _copy_hashing(src: Path, dest: Path) -> tuple[str, int]:
    """Copy in chunks to a temp name beside `dest`, then rename; returns (sha256, size)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
    h, size = hashlib.sha256(), 0
    try:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            while chunk := fi.read(CHUNK):
                h.update(chunk)
                fo.write(chunk)
                size += len(chunk)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return h.hexdigest(), size


def _tar_normalize(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if not (info.isfile() or info.isdir() or info.issym()):
        return None  # devices, fifos: not artifact content
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
    return info


def tar_dir(src: Path, dest_tar: Path) -> None:
    """A deterministic tar of `src` (same content → same bytes → same sha256)."""
    if not src.is_dir():
        raise ArtifactError(f"{src} is not a directory")
    with tarfile.open(dest_tar, "w", format=tarfile.PAX_FORMAT) as tar:
        for root, dirs, files in os.walk(src):
            dirs.sort()
            rel_root = Path(root).relative_to(src)
            for name in dirs + sorted(files):  # dirs too, so empty ones survive the round trip
                tar.add(Path(root) / name, arcname=str(rel_root / name), recursive=False, filter=_tar_normalize)


def _swap_in(partial: Path, dest: Path) -> None:
    """Replace `dest` (file or directory) with `partial` in one rename where possible."""
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.old")
        dest.rename(old)
        partial.rename(dest)
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    else:
        partial.rename(dest)


def untar_into(tar_path: Path, dest_dir: Path) -> None:
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".partial", dir=dest_dir.parent))
    try:
        with tarfile.open(tar_path) as tar:
            tar.extractall(partial, filter="data")  # refuses absolute paths and links out of the tree
        _swap_in(partial, dest_dir)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


class _Base:
    """What both backends share: directories as tars, `file://` reads, temp-then-rename."""

    async def put_file(self, path: str | os.PathLike, name: str) -> ArtifactRef:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _get_to(self, uri: str, expected: str | None, dest: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def put_dir(self, path: str | os.PathLike, name: str) -> ArtifactRef:
        src = Path(path)
        with tempfile.TemporaryDirectory(prefix="lorafleet-tar-") as tmp:
            tar_path = Path(tmp) / "artifact.tar"
            await asyncio.to_thread(tar_dir, src, tar_path)
            return await self.put_file(tar_path, name)

    async def get_file(self, ref_or_uri: ArtifactRef | str, dest: str | os.PathLike) -> Path:
        """Download to `dest` (verified against the ref's sha256, written under a temp name first)."""
        uri, expected = _uri_and_sha(ref_or_uri)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            if urlparse(uri).scheme == "file":
                await asyncio.to_thread(_get_local, uri, expected, tmp)
            else:
                await self._get_to(uri, expected, tmp)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    async def get_dir(self, ref_or_uri: ArtifactRef | str, dest_dir: str | os.PathLike) -> Path:
        """Download a directory artifact and unpack it as `dest_dir` (replacing what was there)."""
        dest_dir = Path(dest_dir)
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".lorafleet-get-", dir=dest_dir.parent) as tmp:
            tar_path = await self.get_file(ref_or_uri, Path(tmp) / "artifact.tar")
            await asyncio.to_thread(untar_into, tar_path, dest_dir)
        return dest_dir

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ArtifactError(f"{uri!r} is not a local artifact URI (file:///abs/path)")
    return Path(unquote(parsed.path))


def _get_local(uri: str, expected: str | None, tmp: Path) -> None:
    src = _local_path(uri)
    if not src.is_file():
        raise ArtifactError(f"artifact {uri} not found")
    if expected is None:
        sidecar = src.with_name(src.name + ".sha256")
        expected = sidecar.read_text().strip() if sidecar.is_file() else None
    h = hashlib.sha256()
    with open(src, "rb") as fi, open(tmp, "wb") as fo:
        while chunk := fi.read(CHUNK):
            h.update(chunk)
            fo.write(chunk)
    if expected is not None and h.hexdigest() != expected:
        raise ArtifactError(f"artifact {uri} is corrupt: sha256 {h.hexdigest()} != expected {expected}")


class LocalArtifactStore(_Base):
    """Artifacts as files under `root` (plus a `.sha256` sidecar each)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()

    def path_of(self, name: str) -> Path:
        return self.root / _check_name(name)

    def uri_of(self, name: str) -> str:
        return file_uri(self.path_of(name))

    async def delete(self, name: str) -> None:
        """Remove an artifact (and its sidecar); a missing one is not an error."""
        dest = self.path_of(name)
        dest.unlink(missing_ok=True)
        dest.with_name(dest.name + ".sha256").unlink(missing_ok=True)

    async def put_file(self, path: str | os.PathLike, name: str) -> ArtifactRef:
        dest = self.path_of(name)

        def put() -> ArtifactRef:
            sha, size = _copy_hashing(Path(path), dest)
            sidecar = dest.with_name(dest.name + ".sha256")
            # Unique temp name: two writers of the same artifact must not share one.
            tmp = sidecar.with_name(f".{sidecar.name}.{uuid.uuid4().hex[:8]}.partial")
            tmp.write_text(sha + "\n")
            tmp.replace(sidecar)
            return ArtifactRef(uri=file_uri(dest), sha256=sha, size_bytes=size)

        return await asyncio.to_thread(put)

    async def _get_to(self, uri: str, expected: str | None, dest: Path) -> None:
        raise ArtifactError(
            f"{uri} lives in the JetStream object store, but this store is the local directory {self.root}: "
            "set LORAFLEET_ARTIFACT_BACKEND=object_store (and a NATS URL) to read it"
        )


class _HashingReader:
    """A file wrapper whose reads feed a sha256 (the object store takes `readinto`)."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def readinto(self, buf: bytearray) -> int:
        n = self.fh.readinto(buf) or 0
        self.sha.update(memoryview(buf)[:n])
        self.size += n
        return n


def _parse_obj_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != OBJ_SCHEME or not parsed.netloc or not parsed.path.strip("/"):
        raise ArtifactError(f"{uri!r} is not an artifact URI: expected {OBJ_SCHEME}://<bucket>/<name> or file:///path")
    return parsed.netloc, unquote(parsed.path.lstrip("/"))


def _digest_hex(digest: str | None) -> str | None:
    if not digest:
        return None
    return base64.urlsafe_b64decode(digest.split("=", 1)[1] + "==").hex() if "=" in digest else None


class ObjectStoreArtifacts(_Base):
    """Artifacts in a JetStream object store bucket (created on first use)."""

    def __init__(self, settings: "Settings", js: "JetStreamContext | None" = None) -> None:
        self.settings = settings
        self.bucket = settings.artifact_bucket
        self._js = js
        self._nc: Any = None  # a connection this store opened itself (closed by close())
        self._stores: dict[str, Any] = {}

    async def js(self) -> "JetStreamContext":
        if self._js is None:
            from lorafleet.shared.bus import connect

            self._nc = await connect(self.settings, name="lorafleet-artifacts")
            self._js = self._nc.jetstream()
        return self._js

    async def object_store(self, bucket: str | None = None, create: bool = True) -> Any:
        from nats.js.api import ObjectStoreConfig, StorageType
        from nats.js.errors import BucketNotFoundError, NotFoundError

        bucket = bucket or self.bucket
        if bucket not in self._stores:
            js = await self.js()
            try:
                self._stores[bucket] = await js.object_store(bucket)
            except (BucketNotFoundError, NotFoundError):
                if not create:
                    raise ArtifactError(f"artifact not found: bucket {bucket!r} does not exist on this NATS server") from None
                self._stores[bucket] = await js.create_object_store(
                    bucket, config=ObjectStoreConfig(storage=StorageType.FILE, replicas=self.settings.stream_replicas),
                )
        return self._stores[bucket]

    def uri_of(self, name: str, bucket: str | None = None) -> str:
        return f"{OBJ_SCHEME}://{bucket or self.bucket}/{quote(_check_name(name))}"

    async def put_file(self, path: str | os.PathLike, name: str) -> ArtifactRef:
        _check_name(name)
        store = await self.object_store()
        with open(path, "rb") as fh:
            reader = _HashingReader(fh)
            info = await store.put(name, reader)
        sha = reader.sha.hexdigest()
        if _digest_hex(info.digest) not in (None, sha):
            raise ArtifactError(f"object store digest of {name} disagrees with the file's sha256: file changed while uploading?")
        return ArtifactRef(uri=self.uri_of(name), sha256=sha, size_bytes=reader.size)

    async def delete(self, name: str) -> None:
        """Remove an artifact (its chunks are purged); a missing one is not an error."""
        from nats.js.errors import NotFoundError, ObjectNotFoundError

        store = await self.object_store()
        try:
            await store.delete(_check_name(name))
        except (NotFoundError, ObjectNotFoundError):
            pass

    async def stat(self, ref_or_uri: ArtifactRef | str) -> ArtifactRef | None:
        """The stored object's ref (sha256 from its digest), or None when it does not exist."""
        from nats.js.errors import NotFoundError, ObjectNotFoundError

        uri, _ = _uri_and_sha(ref_or_uri)
        bucket, name = _parse_obj_uri(uri)
        store = await self.object_store(bucket, create=False)
        try:
            info = await store.get_info(name)
        except (NotFoundError, ObjectNotFoundError):
            return None
        return ArtifactRef(uri=uri, sha256=_digest_hex(info.digest) or "", size_bytes=info.size)

    async def _get_to(self, uri: str, expected: str | None, dest: Path) -> None:
        from nats.js.errors import NotFoundError, ObjectNotFoundError

        bucket, name = _parse_obj_uri(uri)
        store = await self.object_store(bucket, create=False)
        try:
            info = await store.get_info(name)
        except (NotFoundError, ObjectNotFoundError):
            raise ArtifactError(f"artifact {uri} not found in the object store") from None
        stored = _digest_hex(info.digest)
        if expected is not None and stored is not None and stored != expected:
            raise ArtifactError(f"artifact {uri} was replaced: stored sha256 {stored} != referenced {expected}")
        with open(dest, "wb") as fh:
            got = await self._pull_chunks(bucket, info, fh)
        if stored is not None and got != stored:
            raise ArtifactError(f"artifact {uri} is corrupt: sha256 mismatch while downloading")

    async def _pull_chunks(self, bucket: str, info: Any, fh: BinaryIO) -> str:
        """Fetch the object's chunks a few at a time and write them; returns their sha256.

        nats-py's `ObjectStore.get` reads through a push consumer: when the disk (or a loaded CPU)
        is slower than the server, chunks pile up in the client without bound (483 MiB peak for a
        200 MB object was seen). A pull consumer holds at most FETCH_CHUNKS chunks in memory.
        """
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        h = hashlib.sha256()
        remaining = info.chunks or 0
        if remaining == 0:
            return h.hexdigest()
        js = await self.js()
        sub = await js.pull_subscribe(
            f"$O.{bucket}.C.{info.nuid}", stream=f"OBJ_{bucket}",
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0),
        )
        try:
            while remaining > 0:
                for msg in await sub.fetch(batch=min(FETCH_CHUNKS, remaining), timeout=30):
                    h.update(msg.data)
                    await asyncio.to_thread(fh.write, msg.data)
                    remaining -= 1
        finally:
            await sub.unsubscribe()
        return h.hexdigest()

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
            self._nc = None
            self._js = None
            self._stores.clear()


ArtifactStore = ObjectStoreArtifacts | LocalArtifactStore


def open_store(settings: "Settings", js: "JetStreamContext | None" = None) -> ArtifactStore:
    """The configured backend: the JetStream object store (default) or a local directory."""
    backend = settings.artifact_backend.strip().lower().replace("-", "_")
    if backend == "local":
        return LocalArtifactStore(settings.local_artifact_root)
    if backend in ("object_store", "objectstore", "nats"):
        return ObjectStoreArtifacts(settings, js)
    raise ConfigError(
        f"LORAFLEET_ARTIFACT_BACKEND={settings.artifact_backend!r} is not a backend: use object_store or local"
    )
