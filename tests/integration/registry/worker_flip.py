"""A registry writer that promotes and rolls back in a tight loop until it is killed (test_crash.py)."""

import asyncio
import sys

import nats

from lorafleet.services.registry import core
from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.services.registry.store import RegistryStore, now


async def main(url: str) -> None:
    nc = await nats.connect(url)
    store = await RegistryStore.open(nc.jetstream(), RegistrySettings())
    await store.flush_all()  # what a restarted registry does first
    print("ready", flush=True)
    i = 0
    while True:
        state, _ = await store.get("flip")
        target = 1 + (state.active % 3)
        if i % 3 == 2 and state.versions[state.active].previous_version is not None:
            await store.apply("flip", lambda s: core.rollback(s, "flip", now()))
        else:
            await store.apply("flip", lambda s: core.promote(s, "flip", target, now()))
        i += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
