"""An outcome recorder process (test_outcomes.py kills it mid-stream and starts another)."""

import asyncio
import sys

import nats

from lorafleet.services.registry.outcomes import OutcomeRecorder
from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.services.registry.store import RegistryStore


async def main(url: str, batch: int) -> None:
    nc = await nats.connect(url)
    store = await RegistryStore.open(nc.jetstream(), RegistrySettings(outcome_batch=batch, ab_min_samples=10**9))
    await OutcomeRecorder(store).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
