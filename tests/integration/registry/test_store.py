"""The registry's KV store against a real nats-server: CAS under concurrency, crash safety."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from registry_helpers import INFO, NOW, evaluated

from lorafleet.services.registry import core
from lorafleet.services.registry.outcomes import OUTCOME_SUBJECT
from lorafleet.services.registry.store import RegistryStore
from lorafleet.shared.events import STREAM

WORKER = Path(__file__).with_name("worker_concurrent.py")


async def test_eight_processes_register_and_record_without_lost_updates(nc, store, nats_url, registry_settings):
    js = nc.jetstream()
    await store.apply("shared", lambda s: core.register(s, evaluated(name="shared"), INFO, 0, NOW, registry_settings))
    workers, versions, outcomes = 8, 3, 60
    procs = [subprocess.Popen([sys.executable, str(WORKER), nats_url, str(i), str(versions), str(outcomes)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
             for i in range(workers)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "published", p.stderr
        last = (await js.get_last_msg(STREAM, OUTCOME_SUBJECT)).seq
        for p in procs:
            p.stdin.write(f"{last}\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)

    state, _ = await store.get("shared")
    assert sorted(state.versions) == list(range(1, workers * versions + 2))  # nothing lost, no version twice
    ids = [v.lora_int_id for v in state.versions.values()]
    assert len(set(ids)) == len(ids)
    assert set(ids[1:]) == set(range(1, workers * versions + 1))  # the counter handed out each id once
    m = state.versions[1].metrics
    assert m.requests == workers * outcomes  # every outcome counted exactly once by 8 concurrent recorders
    assert m.successes == workers * len(range(0, outcomes, 3))
    assert m.latency_ms_sum == sum(float(i) * outcomes for i in range(workers))
    print("CAS conflicts:", [o.strip() for o in outs])


async def test_crash_after_write_before_publish_publishes_once_on_restart(nc, store, registry_settings):
    """A promotion written to KV whose events were never published (the process died) is published by
    the next process's startup sweep, exactly once even if two processes sweep."""
    js = nc.jetstream()
    await store.apply("py", lambda s: core.register(s, evaluated(name="py"), INFO, 1, NOW, registry_settings))
    await store.update("py", lambda s: core.promote(s, "py", 1, NOW))  # written, not published: "killed" here
    state, _ = await store.get("py")
    assert state.active == 1 and [i.event_type for i in state.outbox] == ["adapter.promoted"]

    second = await RegistryStore.open(js, registry_settings)
    assert await store.flush_all() == 1
    assert await second.flush_all() == 0
    await second.flush("py", state)  # a stale copy re-publishes the same id: deduplicated by the stream
    info = await js.stream_info(STREAM, subjects_filter="lorafleet.v1.adapter.promoted")
    assert info.state.subjects == {"lorafleet.v1.adapter.promoted": 1}
    state, _ = await store.get("py")
    assert state.outbox == []


async def test_lora_int_ids_unique_under_concurrency(store):
    ids = await asyncio.gather(*(store.next_lora_int_id() for _ in range(50)))
    assert sorted(ids) == list(range(1, 51))


async def test_names_lists_every_adapter_as_the_server_counts_them(store, registry_settings):
    assert await store.names() == []
    names = [f"py-{i:02d}" for i in range(40)]
    await asyncio.gather(*(store.apply(n, lambda s, n=n: core.register(s, evaluated(name=n), INFO, 1, NOW,
                                                                          registry_settings)) for n in names))
    for _ in range(5):  # kv.keys() missed entries under load; the server's subject list does not
        assert await store.names() == names
    assert [s.name for s in await store.all()] == names
