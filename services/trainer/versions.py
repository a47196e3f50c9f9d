"""Adapter versions: monotonic per adapter name, from a JetStream KV compare-and-set counter.

Two keys per adapter: `counter.<name>` (the last version handed out) and
`request.<name>.<request_id>` (the version of one training request), so a
redelivered job gets the version it got the first time. A version lost to a race
(two replicas on the same request) leaves a gap, never a reuse.
"""

from __future__ import annotations

from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError

BUCKET = "lorafleet-trainer-versions"


async def version_bucket(js, replicas: int = 1):
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        try:
            return await js.create_key_value(bucket=BUCKET, history=1, replicas=replicas)
        except Exception:  # created meanwhile by another replica
            return await js.key_value(BUCKET)


async def _get(kv, key: str):
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    return entry if entry.value is not None else None


async def assign_version(kv, adapter_name: str, request_id: str, max_attempts: int = 100) -> int:
    request_key = f"request.{adapter_name}.{request_id}"
    existing = await _get(kv, request_key)
    if existing is not None:
        return int(existing.value)
    counter_key = f"counter.{adapter_name}"
    for _ in range(max_attempts):
        entry = await _get(kv, counter_key)
        try:
            if entry is None:
                version = 1
                await kv.create(counter_key, b"1")
            else:
                version = int(entry.value) + 1
                await kv.update(counter_key, str(version).encode(), last=entry.revision)
            break
        except KeyWrongLastSequenceError:
            continue  # another writer moved the counter: read again
    else:
        raise RuntimeError(f"could not take a version for {adapter_name} after {max_attempts} attempts")
    try:
        await kv.create(request_key, str(version).encode())
    except KeyWrongLastSequenceError:  # the same request raced us: its version wins
        return int((await kv.get(request_key)).value)
    return version


async def latest_version(kv, adapter_name: str) -> int:
    entry = await _get(kv, f"counter.{adapter_name}")
    return int(entry.value) if entry else 0
