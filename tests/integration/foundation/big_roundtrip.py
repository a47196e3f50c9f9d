"""Put and get one big file through the object store in this process; print sha256s and peak RSS.

usage: python big_roundtrip.py FILE   (LORAFLEET_NATS_URL from the env)
"""

import asyncio
import json
import sys
from pathlib import Path

from lorafleet.shared.artifacts import open_store, sha256_file
from lorafleet.shared.settings import get_settings


def peak_rss_bytes() -> int:
    """This process's own high-water RSS (VmHWM of its address space).

    Not getrusage's ru_maxrss: across a vfork+exec Linux carries the parent's high-water mark into
    the child's, so it reported pytest's ~480 MiB (torch loaded by earlier tests) as ours.
    """
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


async def main(path: Path) -> None:
    async with open_store(get_settings()) as store:
        ref = await store.put_file(path, "big/blob.bin")
        back = await store.get_file(ref, path.with_name("back.bin"))
    print(json.dumps({
        "ref": ref.model_dump(), "source_sha256": sha256_file(path), "back_sha256": sha256_file(back),
        "peak_rss_bytes": peak_rss_bytes(),
    }))


asyncio.run(main(Path(sys.argv[1])))
