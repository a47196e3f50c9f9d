import pytest

from lorafleet.services.evaluator.shards import EvalProgress, plan_shards, record_shard
from lorafleet.shared.events import ArtifactRef


def ref(i):
    return ArtifactRef(uri=f"file:///r/{i}", sha256=str(i))


def test_plan_covers_every_problem_once():
    ids = [f"p{i}" for i in range(10)]
    shards = plan_shards(ids, 4)
    assert [len(s) for s in shards] == [4, 4, 2]
    assert [p for s in shards for p in s] == ids
    with pytest.raises(ValueError, match="unique"):
        plan_shards(["a", "a"], 1)
    with pytest.raises(ValueError, match="at least one"):
        plan_shards([], 1)


def test_only_the_completing_event_aggregates():
    p = EvalProgress(evaluation_id="e", shard_count=3, spec=ref("s"))
    p, agg = record_shard(p, 0, ref(0), "ev0")
    assert not agg
    p, agg = record_shard(p, 2, ref(2), "ev2")
    assert not agg
    p, agg = record_shard(p, 1, ref(1), "ev1")
    assert agg and p.aggregator == "ev1"
    # a redelivered earlier event sees the set complete but doesn't own it
    p2, agg = record_shard(p, 0, ref(99), "ev0")
    assert not agg and p2.done["0"] == ref(0)
    # the claimant's own redelivery (it died while aggregating) aggregates again
    _, agg = record_shard(p, 1, ref(1), "ev1")
    assert agg


def test_rejects_foreign_shards():
    with pytest.raises(ValueError, match="outside"):
        record_shard(EvalProgress(evaluation_id="e", shard_count=2, spec=ref("s")), 2, ref(2), "x")
