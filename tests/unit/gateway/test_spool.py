"""The outcome spool on a real directory: bounded, survives a restart, nothing half-written is kept."""

from __future__ import annotations

from lorafleet.services.gateway.core import spool_name
from lorafleet.services.gateway.spool import Spool
from lorafleet.shared.events import ProductionOutcome


def outcome(i: int) -> ProductionOutcome:
    rid = f"00000000-0000-0000-0000-{i:012d}"
    return ProductionOutcome(event_id=rid, request_id=rid, adapter_name="py", version=1, request_key="k",
                             success=True, confidence=1.0, latency_ms=1.0)


def test_bounded_and_idempotent(tmp_path):
    spool = Spool(tmp_path, max_entries=2)
    assert spool.put(outcome(1)) and spool.put(outcome(1)) and len(spool) == 1  # the same outcome once
    assert spool.put(outcome(2)) and not spool.put(outcome(3))
    assert len(spool) == 2 and spool.dropped == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(spool_name(outcome(i).event_id) for i in (1, 2))


def test_a_restart_finds_the_outcomes_and_drops_partial_writes(tmp_path):
    spool = Spool(tmp_path, max_entries=10)
    for i in range(3):
        spool.put(outcome(i))
    (tmp_path / ".half.json.tmp").write_bytes(b'{"event_id": "trunc')
    again = Spool(tmp_path, max_entries=10)
    assert len(again) == 3 and not (tmp_path / ".half.json.tmp").exists()
    names = again.names()
    assert again.load(names[0]).event_id == outcome(0).event_id
    again.remove(names[0])
    assert len(again) == 2 and len(Spool(tmp_path, 10)) == 2


def test_a_damaged_file_is_set_aside(tmp_path):
    spool = Spool(tmp_path, max_entries=10)
    (tmp_path / "junk.json").write_text("{}")
    spool = Spool(tmp_path, max_entries=10)
    assert spool.load("junk.json") is None and len(spool) == 0 and (tmp_path / "junk.json.bad").exists()
    assert spool_name("a/b..c") == "a_b__c.json"


def test_processes_never_share_a_spool_and_a_free_one_is_reused(tmp_path):
    first = Spool.claim(tmp_path, 10)
    second = Spool.claim(tmp_path, 10)  # the first still holds its lock
    assert first.dir != second.dir
    first.put(outcome(1))
    first._lock.close()  # its process ended
    again = Spool.claim(tmp_path, 10)
    assert again.dir == first.dir and len(again) == 1  # what it left is published by the next owner
