"""One of the concurrent writers in test_store.py: registers versions of a shared adapter,
publishes outcomes and runs an outcome recorder, all against the same nats-server."""

import asyncio
import sys
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "registry"))

from registry_helpers import INFO, NOW, evaluated  # noqa: E402

from lorafleet.services.registry import core  # noqa: E402
from lorafleet.services.registry.outcomes import OutcomeRecorder  # noqa: E402
from lorafleet.services.registry.settings import RegistrySettings  # noqa: E402
from lorafleet.services.registry.store import RegistryStore  # noqa: E402
from lorafleet.shared.bus import publish_event
from lorafleet.shared.events import ProductionOutcome  # noqa: E402


async def main(url: str, index: int, versions: int, outcomes: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    settings = RegistrySettings(ab_min_samples=10**9, ab_auto_start=False, outcome_linger_ms=1)
    store = await RegistryStore.open(js, settings)
    recorder = await OutcomeRecorder(store).start()

    async def register_next() -> None:
        lora_id = await store.next_lora_int_id()

        def fn(state):
            version = (state.latest() or 0) + 1 if state else 1
            ev = evaluated(name="shared", version=version, sha=f"{index:032x}{version:032x}")
            return core.register(state, ev, INFO, lora_id, NOW, settings)

        await store.apply("shared", fn)

    async def publish_outcomes() -> None:
        for i in range(outcomes):
            await publish_event(js, ProductionOutcome(
                request_id="r", adapter_name="shared", version=1, request_key=f"{index}-{i}",
                success=i % 3 == 0, confidence=0.5, latency_ms=float(index)))

    await asyncio.gather(*(register_next() for _ in range(versions)), publish_outcomes())
    print("published", flush=True)
    last_seq = int((await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip())
    await recorder.wait_for(last_seq, timeout=120)
    await recorder.stop()
    print(f"conflicts={store.conflicts}", flush=True)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
