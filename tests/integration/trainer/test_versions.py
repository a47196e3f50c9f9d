import asyncio

from lorafleet.services.trainer.versions import assign_version, latest_version, version_bucket


async def test_versions_are_monotonic_per_adapter_and_stable_per_request(js):
    kv = await version_bucket(js)
    assert await assign_version(kv, "python-lora", "req-1") == 1
    assert await assign_version(kv, "python-lora", "req-2") == 2
    assert await assign_version(kv, "math-lora", "req-3") == 1
    # a redelivered job (same request) gets the version it got the first time
    assert await assign_version(kv, "python-lora", "req-1") == 1
    assert await latest_version(kv, "python-lora") == 2


async def test_concurrent_writers_never_share_a_version(js):
    kv = await version_bucket(js)
    versions = await asyncio.gather(*(assign_version(kv, "a", f"r{i}") for i in range(12)))
    assert sorted(versions) == list(range(1, 13))
    # many replicas racing on one request all agree on one version
    same = await asyncio.gather(*(assign_version(kv, "a", "dup") for _ in range(6)))
    assert len(set(same)) == 1 and same[0] > 12
    assert await assign_version(kv, "a", "next") > same[0]
