"""Registry benchmark: production.outcome events recorded per second (exactly once, across a
restart) and route() latency, on an embedded nats-server started here.

Every figure comes with a baseline measured in the same run on the same server, because this
machine is shared and absolute numbers move with the load:
- outcomes: a raw nats-py ordered consumer that only reads the same messages (no parsing, no KV);
- route(): a bare dict lookup + blake2b hash of the key (what a hash router can't go below).

    .venv/bin/python benchmarks/registry.py [--outcomes 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nats

from lorafleet.services.registry import core
from lorafleet.services.registry.model import AdapterInfo
from lorafleet.services.registry.outcomes import OUTCOME_SUBJECT, OutcomeRecorder
from lorafleet.services.registry.routing import Router, hash_unit, request_route
from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.services.registry.store import RegistryStore
from lorafleet.shared.bus import ensure_stream, publish_event
from lorafleet.shared.events import STREAM, AdapterEvaluated, ArtifactRef, GateCriterion, ProductionOutcome
from lorafleet.shared.nats_server import NatsServer
from lorafleet.shared.settings import Settings

NAME = "bench-lora"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def publish_outcomes(js, n: int, start: int = 0) -> float:
    t0 = time.perf_counter()
    for chunk in range(start, start + n, 1000):
        await asyncio.gather(*(publish_event(js, ProductionOutcome(
            request_id="bench", adapter_name=NAME, version=(i % 2), request_key=f"k{i}", success=i % 3 != 0,
            confidence=0.5, latency_ms=float(i % 50))) for i in range(chunk, min(chunk + 1000, start + n))))
    return n / (time.perf_counter() - t0)


async def raw_read_rate(js, n: int) -> float:
    done = asyncio.Event()
    seen = 0

    async def cb(msg):
        nonlocal seen
        seen += 1
        if seen >= n:
            done.set()

    t0 = time.perf_counter()
    sub = await js.subscribe(OUTCOME_SUBJECT, stream=STREAM, ordered_consumer=True, cb=cb)
    await done.wait()
    elapsed = time.perf_counter() - t0
    await sub.unsubscribe()
    return n / elapsed


async def record_rate(store: RegistryStore, last_seq: int) -> tuple[float, OutcomeRecorder]:
    t0 = time.perf_counter()
    recorder = await OutcomeRecorder(store).start()
    await recorder.wait_for(last_seq, timeout=600)
    return (time.perf_counter() - t0), recorder


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, NatsServer(store_dir=Path(tmp) / "nats") as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_stream(js, Settings(nats_url=server.url))
        settings = RegistrySettings(ab_min_samples=10**9)  # keep the A/B test running: pure counting
        store = await RegistryStore.open(js, settings)
        ev = AdapterEvaluated(request_id="bench", adapter_name=NAME, version=1,
                              adapter=ArtifactRef(uri="obj://b/a", sha256="0" * 64), base_model="b", rank=16,
                              target_modules=["q_proj"], gate_passed=True,
                              gate=[GateCriterion(name="g", measured=1, threshold=0, comparison=">=", passed=True)])
        info = AdapterInfo(rank=16, target_modules=["q_proj"])
        await store.apply(NAME, lambda s: core.register(s, ev, info, 1, datetime.now(timezone.utc), settings))

        # 1. backlog: n outcomes already in the stream, recorder starts cold
        pub_rate = await publish_outcomes(js, n)
        last = (await js.get_last_msg(STREAM, OUTCOME_SUBJECT)).seq
        raw_rate = await raw_read_rate(js, n)
        elapsed, recorder = await record_rate(store, last)
        await recorder.stop()
        backlog_rate = n / elapsed

        # 2. restart halfway through a second backlog: exactly once across the restart
        await publish_outcomes(js, n, start=n)
        last2 = (await js.get_last_msg(STREAM, OUTCOME_SUBJECT)).seq
        recorder = await OutcomeRecorder(store).start()
        await recorder.wait_for(last - 1 + n // 2, timeout=600)
        await recorder.stop()  # "crash" mid-stream (cursor and entry may be one batch apart)
        recorder = await OutcomeRecorder(store).start()
        await recorder.wait_for(last2, timeout=600)

        # 3. live: a producer process publishes while the recorder runs; time until the last one is counted
        producer = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--produce", server.url, str(n), str(2 * n), stdout=asyncio.subprocess.PIPE)
        out, _ = await producer.communicate()
        live_pub_rate, pub_start, pub_end = (float(x) for x in out.decode().split()[-3:])
        last3 = (await js.get_last_msg(STREAM, OUTCOME_SUBJECT)).seq
        await recorder.wait_for(last3, timeout=600)
        counted_at = time.time()
        live_rate = n / (counted_at - pub_start)
        live_lag_ms = (counted_at - pub_end) * 1000
        await recorder.stop()
        state, _ = await store.get(NAME)
        counted = state.versions[1].metrics.requests + state.base_metrics.requests
        expected_success = sum(1 for i in range(3 * n) if i % 3 != 0)
        counted_success = state.versions[1].metrics.successes + state.base_metrics.successes

        # 4. route(): in-process cache, and request-reply through the server
        router = await Router(store.kv).start()
        await router.serve_requests(nc)
        keys = [f"req-{i}" for i in range(100_000)]
        lat_route, lat_base = [], []
        table = {NAME: router.tables[NAME]}
        for k in keys:
            t = time.perf_counter_ns()
            router.route(NAME, k)
            lat_route.append((time.perf_counter_ns() - t) / 1000)
            t = time.perf_counter_ns()
            _ = table[NAME], hash_unit("salt", k)
            lat_base.append((time.perf_counter_ns() - t) / 1000)
        lat_rr = []
        for k in keys[:2000]:
            t = time.perf_counter_ns()
            await request_route(nc, NAME, k)
            lat_rr.append((time.perf_counter_ns() - t) / 1000)
        await router.stop()

        # 5. the collector's path: the registry service's durable consumer (bus runner) drains all 3n outcomes
        from lorafleet.services.registry.app import service

        bus_settings = Settings(nats_url=server.url, artifact_backend="local", artifact_dir=Path(tmp) / "artifacts")
        t0 = time.perf_counter()
        async with service.running(bus_settings):
            while True:
                ci = await js.consumer_info(STREAM, service.name)
                if ci.num_pending == 0 and ci.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.05)
        collector_rate = 3 * n / (time.perf_counter() - t0)
        await nc.close()

    print(f"registry benchmark, {n} outcomes per phase, embedded nats-server, shared 2-core machine (noisy)\n")
    print(f"{'measure':<52}{'value':>14}{'ratio':>12}")
    print(f"{'raw nats-py read of the outcomes (baseline)':<52}{raw_rate:>10,.0f} /s{1.0:>12.2f}")
    print(f"{'publish rate of the producer (pipelined)':<52}{pub_rate:>10,.0f} /s{pub_rate / raw_rate:>12.2f}")
    print(f"{'recorded from a backlog (cold start)':<52}{backlog_rate:>10,.0f} /s{backlog_rate / raw_rate:>12.2f}")
    print(f"{'live: producer process publish rate':<52}{live_pub_rate:>10,.0f} /s{live_pub_rate / raw_rate:>12.2f}")
    print(f"{'live: recorded (first publish to last counted)':<52}{live_rate:>10,.0f} /s{live_rate / live_pub_rate:>12.2f} of producer")
    print(f"{'live: last outcome counted after the last publish':<52}{live_lag_ms:>10,.0f} ms")
    print(f"{'collector path: service consumer drains (bus runner)':<52}{collector_rate:>10,.0f} /s{collector_rate / raw_rate:>12.2f}")
    print(f"{'counted / published (3 phases, one restart)':<52}{counted:>10,} /{3 * n:,}")
    print(f"{'successes counted / expected':<52}{counted_success:>10,} /{expected_success:,}")
    print(f"{'route() p50 / p99, in process (us)':<52}{pct(lat_route, .5):>7.1f} /{pct(lat_route, .99):>5.1f}"
          f"{pct(lat_route, .5) / pct(lat_base, .5):>12.2f} x dict+hash")
    print(f"{'dict+hash baseline p50 / p99 (us)':<52}{pct(lat_base, .5):>7.1f} /{pct(lat_base, .99):>5.1f}")
    print(f"{'route request-reply p50 / p99 (us)':<52}{pct(lat_rr, .5):>7.0f} /{pct(lat_rr, .99):>5.0f}")
    print(f"{'mean route() (us)':<52}{statistics.mean(lat_route):>7.1f}")
    if counted != 3 * n or counted_success != expected_success:
        raise SystemExit("LOST OR DOUBLE-COUNTED OUTCOMES")


async def produce(url: str, n: int, start: int) -> None:
    nc = await nats.connect(url)
    began = time.time()
    rate = await publish_outcomes(nc.jetstream(), n, start)
    print(f"{rate:.1f} {began:.6f} {time.time():.6f}")
    await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=int, default=20000)
    parser.add_argument("--produce", nargs=3, metavar=("URL", "N", "START"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        asyncio.run(produce(args.produce[0], int(args.produce[1]), int(args.produce[2])))
    else:
        asyncio.run(main(args.outcomes))
