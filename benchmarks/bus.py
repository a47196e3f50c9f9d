"""Bus throughput: lorafleet's publish/consume path next to raw nats-py, same server, same run.

    .venv/bin/python benchmarks/bus.py [--messages 3000] [--repeats 3]

Starts an embedded nats-server (JetStream, file storage) in a temp dir. For each
setup it publishes N events (64 in flight, each awaiting its PubAck) and then
consumes them with an explicit ack per message, timing both phases (consume from
the first message handled to the last acked, so connection/setup time is left out):

- raw nats-py: `js.publish(bytes)`; `pull_subscribe` + `fetch(batch)` + `msg.ack()`.
- lorafleet: `publish_event` (pydantic serialisation, Nats-Msg-Id header);
  the `Service` runner (FastStream pull subscriber, parse + validate into the
  event model, heartbeat task, ack), with concurrency = the raw batch size.
  Replicas are runners (or raw subscriptions) in this process, each with its own
  connection, bound to one durable consumer.

Figures are events/s and the ratio lorafleet / raw measured in the same run
(medians of --repeats), which holds up on a busy machine better than absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import nats
from nats.js import api

from lorafleet.shared.bus import ensure_stream, publish_event
from lorafleet.shared.service import Service
from lorafleet.shared.events import STREAM, ArtifactRef, DatasetReady
from lorafleet.shared.nats_server import NatsServer
from lorafleet.shared.settings import Settings

WINDOW = 64


def make_events(n: int, run: str) -> list[DatasetReady]:
    return [DatasetReady(request_id=f"{run}-{i}", adapter_name="python-lora", config={"lora": {"r": 32}},
                         config_sha256="c" * 64, stats={"train": 1000, "eval": 100},
                         dataset=ArtifactRef(uri=f"nats-obj://lorafleet-artifacts/datasets/{run}-{i}.tar",
                                             sha256="0" * 64, size_bytes=123456))
            for i in range(n)]


async def windowed(coros_factory, n: int) -> None:
    for start in range(0, n, WINDOW):
        await asyncio.gather(*(coros_factory(i) for i in range(start, min(n, start + WINDOW))))


async def reset(js) -> None:
    await js.purge_stream(STREAM)
    for info in await js.consumers_info(STREAM):
        await js.delete_consumer(STREAM, info.name)


async def raw_run(url: str, js, events: list[DatasetReady], replicas: int) -> tuple[float, float]:
    payloads = [e.to_bytes() for e in events]  # serialisation is not part of the raw path
    subject = DatasetReady.subject()
    t0 = time.perf_counter()
    await windowed(lambda i: js.publish(subject, payloads[i], stream=STREAM), len(payloads))
    publish_s = time.perf_counter() - t0

    await js.add_consumer(STREAM, api.ConsumerConfig(durable_name="bench_raw", filter_subject=subject,
                                                     ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=10000))
    conns = [await nats.connect(url) for _ in range(replicas)]
    done = 0
    target = len(payloads)
    first: list[float] = []

    async def consume(nc) -> None:
        nonlocal done
        sub = await nc.jetstream().pull_subscribe_bind("bench_raw", stream=STREAM)
        while done < target:
            try:
                msgs = await sub.fetch(WINDOW, timeout=0.5)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            first.append(time.perf_counter())
            for m in msgs:
                await m.ack()
                done += 1

    await asyncio.gather(*(consume(nc) for nc in conns))
    consume_s = time.perf_counter() - min(first)
    for nc in conns:
        await nc.close()
    return publish_s, consume_s


async def lorafleet_run(settings: Settings, js, events: list[DatasetReady], replicas: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    await windowed(lambda i: publish_event(js, events[i]), len(events))
    publish_s = time.perf_counter() - t0

    service = Service("bench_lf", concurrency=WINDOW)
    first: list[float] = []

    @service.handler(DatasetReady)
    async def on_dataset_ready(event: DatasetReady, ctx) -> None:
        if not first:
            first.append(time.perf_counter())

    runners = []
    for _ in range(replicas):
        cm = service.running(settings)
        runners.append((cm, await cm.__aenter__()))
    while sum(r.processed for _, r in runners) < len(events):
        await asyncio.sleep(0.002)
    consume_s = time.perf_counter() - first[0]
    for cm, _ in runners:
        await cm.__aexit__(None, None, None)
    return publish_s, consume_s


async def main(n: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, NatsServer(store_dir=Path(tmp) / "nats") as server:
        settings = Settings(nats_url=server.url, ack_wait_s=30)
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_stream(js, settings)
        rows = []
        for replicas in (1, 3):
            results: dict[str, list[tuple[float, float]]] = {"raw": [], "lorafleet": []}
            for rep in range(repeats):
                # Alternate the order so neither side always runs on a warmer server.
                order = ("raw", "lorafleet") if rep % 2 == 0 else ("lorafleet", "raw")
                for kind in order:
                    await reset(js)
                    events = make_events(n, f"{kind}-{replicas}-{rep}")
                    run = raw_run(server.url, js, events, replicas) if kind == "raw" else \
                        lorafleet_run(settings, js, events, replicas)
                    results[kind].append(await run)
            med = {k: (statistics.median(p for p, _ in v), statistics.median(c for _, c in v)) for k, v in results.items()}
            rows.append((replicas, med))
        await nc.close()

    print(f"\nbus throughput, {n} events per run, median of {repeats} (events/s; ratio = lorafleet / raw, same run)")
    print(f"{'replicas':>8} {'phase':>8} {'raw nats-py':>12} {'lorafleet':>10} {'ratio':>6}")
    for replicas, med in rows:
        for i, phase in enumerate(("publish", "consume")):
            raw, lf = n / med["raw"][i], n / med["lorafleet"][i]
            print(f"{replicas:>8} {phase:>8} {raw:>12.0f} {lf:>10.0f} {lf / raw:>6.2f}")
        raw_total = n / (med["raw"][0] + med["raw"][1])
        lf_total = n / (med["lorafleet"][0] + med["lorafleet"][1])
        print(f"{replicas:>8} {'both':>8} {raw_total:>12.0f} {lf_total:>10.0f} {lf_total / raw_total:>6.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.repeats))
