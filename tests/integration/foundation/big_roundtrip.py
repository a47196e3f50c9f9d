"""Put and get one big file through the object store in this process; print sha256s and peak RSS.

usage: python big_roundtrip.py FILE   (LORAFLEET_NATS_URL from the env)
"""

import asyncio
import json
import resource
import sys
from pathlib import Path

from lorafleet.shared.artifacts import open_store, sha256_file
from lorafleet.shared.settings import get_settings


async def main(path: Path) -> None:
    async with open_store(get_settings()) as store:
        ref = await store.put_file(path, "big/blob.bin")
        back = await store.get_file(ref, path.with_name("back.bin"))
    print(json.dumps({
        "ref": ref.model_dump(), "source_sha256": sha256_file(path), "back_sha256": sha256_file(back),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


asyncio.run(main(Path(sys.argv[1])))
