"""Enrichment against a real local chat-completions server that misbehaves on purpose."""

from __future__ import annotations

import json
import time

import pytest

from lorafleet.services.enrich import core
from lorafleet.services.enrich.cache import AnswerCache
from lorafleet.services.enrich.client import EndpointDown, EndpointError
from lorafleet.services.enrich.dataset import enrich_dataset, read_examples
from lorafleet.services.enrich.pipeline import Target
from lorafleet.shared.config import EnrichSection
from lorafleet.shared.nats_server import free_port

FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=0.5, max_retries=3, concurrency=8)


def target(server, model="reasoner", key=None) -> Target:
    return Target(endpoint=server.url, model=model, api_key=key)


async def test_every_example_ends_enriched_rejected_or_failed(chat_server, example_factory, dataset_writer, tmp_path):
    chat_server.slow_s = 1.0
    faults = {10: "429*2", 11: "500*2", 12: "drop*1", 13: "cut*1", 14: "slow*1", 15: "length", 16: "empty",
              17: "paste", 18: "500*99", 19: "drop*99"}
    train = [example_factory(i, faults.get(i)) for i in range(20)]
    train += [example_factory(20, reasoning="Already explained."), example_factory(21, reasoning="Mine.")]
    eval_ = [example_factory(22), example_factory(23, "429*1")]
    src = dataset_writer(tmp_path / "ds", train, eval_)
    cfg = EnrichSection(**FAST, max_failed_fraction=0.2)

    with AnswerCache.in_data_dir(tmp_path / "data") as cache:
        stats = await enrich_dataset(src, tmp_path / "out", cfg, target(chat_server), cache)

    assert stats["total"] == 24
    assert stats["generated"] == 17 and stats["cached"] == 0 and stats["passthrough"] == 2
    assert stats["rejected"] == 3
    assert stats["rejected_by_reason"] == {"truncated": 1, "empty": 1, "contains_code": 1}
    assert stats["failed"] == 2 and stats["failed_by_reason"] == {"http_500": 1, "connection": 1}
    assert stats["splits"] == {"train": 22, "eval": 2}
    assert set(stats["retry_reasons"]) == {"http_429", "http_500", "connection", "dropped", "timeout"}

    asked = chat_server.requests_by_prompt
    expected_requests = {10: 3, 11: 3, 12: 2, 13: 2, 14: 2, 15: 1, 16: 1, 17: 1, 18: 4, 19: 4, 20: 0, 21: 0, 23: 2}
    for i, ex in enumerate(train + eval_):
        assert asked[chat_server.prompt_id(core.build_messages(ex))] == expected_requests.get(i, 1), i
    assert chat_server.max_in_flight <= 8

    out_train = read_examples(tmp_path / "out" / "train.jsonl")
    out_eval = read_examples(tmp_path / "out" / "eval.jsonl")
    assert [e.id for e in out_train] == [e.id for e in train]  # order kept
    by_id = {e.id: e for e in out_train + out_eval}
    assert by_id["ex0"].reasoning.startswith("Reasoning ")
    assert by_id["ex23"].reasoning.startswith("Reasoning ")
    assert by_id["ex20"].reasoning == "Already explained."
    for rejected_or_failed in ("ex15", "ex16", "ex17", "ex18", "ex19"):
        assert by_id[rejected_or_failed].reasoning is None
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["source"] == "test" and manifest["enrich"]["generated"] == 17
    assert (tmp_path / "out" / "eval_problems.jsonl").exists()

    # Second run: every answered prompt comes from the cache; only the two failures are asked again.
    before = chat_server.total_requests
    with AnswerCache.in_data_dir(tmp_path / "data") as cache:
        again = await enrich_dataset(src, tmp_path / "out", cfg, target(chat_server), cache)
    assert again["cached"] == 17 and again["generated"] == 0 and again["rejected"] == 3 and again["failed"] == 2
    assert again["requests"] == 8  # ex18 and ex19 only, 4 attempts each
    assert chat_server.total_requests - before == again["requests"]


async def test_retry_after_is_honoured(chat_server, example_factory, dataset_writer, tmp_path):
    chat_server.retry_after = "0.6"
    src = dataset_writer(tmp_path / "ds", [example_factory(1, "429*1")])
    cfg = EnrichSection(**{**FAST, "backoff_base_s": 0.001})
    started = time.monotonic()
    with AnswerCache.in_data_dir(tmp_path / "data") as cache:
        stats = await enrich_dataset(src, tmp_path / "out", cfg, target(chat_server), cache)
    assert stats["generated"] == 1 and stats["retry_reasons"] == {"http_429": 1}
    assert time.monotonic() - started >= 0.6  # the jittered backoff alone would be ~1 ms


async def test_concurrency_is_bounded_and_used(chat_server, example_factory, dataset_writer, tmp_path):
    chat_server.latency_s = 0.05
    src = dataset_writer(tmp_path / "ds", [example_factory(i) for i in range(60)])
    with AnswerCache.in_data_dir(tmp_path / "data") as cache:
        stats = await enrich_dataset(src, tmp_path / "out", EnrichSection(**{**FAST, "concurrency": 6}), target(chat_server), cache)
    assert stats["generated"] == 60 and stats["requests"] == 60
    assert chat_server.max_in_flight == 6


async def test_one_poisoned_prompt_is_not_an_endpoint_down(chat_server, example_factory, dataset_writer, tmp_path):
    # The only request left keeps failing while nothing else is asked: the health probe
    # still answers, so this is one failed example, not a dead endpoint.
    src = dataset_writer(tmp_path / "ds", [example_factory(1, "500*99")])
    cfg = EnrichSection(**FAST, max_failed_fraction=1.0, allow_fallback=True)
    with AnswerCache.in_data_dir(tmp_path / "data") as cache:
        stats = await enrich_dataset(src, tmp_path / "out", cfg, target(chat_server), cache)
    assert stats["failed"] == 1 and stats["fallback"] == 1
    assert read_examples(tmp_path / "out" / "train.jsonl")[0].reasoning == core.FALLBACK_REASONING


async def test_endpoint_down_fails_retriable_without_partial_output(chat_server, example_factory, dataset_writer, tmp_path):
    chat_server.down = True
    src = dataset_writer(tmp_path / "ds", [example_factory(i) for i in range(30)])
    started = time.monotonic()
    with AnswerCache.in_data_dir(tmp_path / "data") as cache, pytest.raises(EndpointDown, match=chat_server.url):
        await enrich_dataset(src, tmp_path / "out", EnrichSection(**FAST), target(chat_server), cache)
    assert time.monotonic() - started < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "ds"]  # no output, no temp dir


async def test_too_many_failures_fail_the_job(chat_server, example_factory, dataset_writer, tmp_path):
    src = dataset_writer(tmp_path / "ds", [example_factory(i, "500*99" if i < 3 else None) for i in range(10)])
    with AnswerCache.in_data_dir(tmp_path / "data") as cache:
        with pytest.raises(EndpointDown, match="3 of 10 examples failed"):
            await enrich_dataset(src, tmp_path / "out", EnrichSection(**FAST), target(chat_server), cache)
        assert len(cache) == 7  # what was answered is kept for the retry
    assert not (tmp_path / "out").exists()


async def test_unreachable_endpoint_is_one_clear_error(example_factory, dataset_writer, tmp_path):
    src = dataset_writer(tmp_path / "ds", [example_factory(1)])
    url = f"http://127.0.0.1:{free_port()}/v1"
    with AnswerCache.in_data_dir(tmp_path / "data") as cache:
        with pytest.raises(EndpointDown, match=f"enrich endpoint {url} does not answer"):
            await enrich_dataset(src, tmp_path / "out", EnrichSection(**FAST), Target(url, "reasoner", None), cache)
    assert not (tmp_path / "out").exists()


async def test_bad_api_key_is_fatal(chat_server, example_factory, dataset_writer, tmp_path):
    chat_server.api_key = "right"
    src = dataset_writer(tmp_path / "ds", [example_factory(1)])
    with AnswerCache.in_data_dir(tmp_path / "data") as cache:
        with pytest.raises(EndpointError, match="refused the API key"):
            await enrich_dataset(src, tmp_path / "out", EnrichSection(**FAST), target(chat_server, key="wrong"), cache)
        stats = await enrich_dataset(src, tmp_path / "out", EnrichSection(**FAST), target(chat_server, key="right"), cache)
    assert stats["generated"] == 1


@pytest.mark.parametrize("list_models", [True, False])
async def test_unknown_model_is_fatal(chat_server, example_factory, dataset_writer, tmp_path, list_models):
    chat_server.list_models = list_models  # without /v1/models the first request finds out
    src = dataset_writer(tmp_path / "ds", [example_factory(i) for i in range(5)])
    with AnswerCache.in_data_dir(tmp_path / "data") as cache:
        with pytest.raises(EndpointError, match="gpt-nope") as err:
            await enrich_dataset(src, tmp_path / "out", EnrichSection(**FAST), target(chat_server, model="gpt-nope"), cache)
    assert chat_server.url in str(err.value)
    assert chat_server.total_requests <= (0 if list_models else 5)
    assert not (tmp_path / "out").exists()


async def test_identical_prompts_are_asked_once(chat_server, example_factory, dataset_writer, tmp_path):
    chat_server.latency_s = 0.05
    twin = example_factory(7)
    src = dataset_writer(tmp_path / "ds", [twin, example_factory(8), twin.model_copy(update={"id": "twin"})])
    with AnswerCache.in_data_dir(tmp_path / "data") as cache:
        stats = await enrich_dataset(src, tmp_path / "out", EnrichSection(**FAST), target(chat_server), cache)
    assert stats["requests"] == 2 and stats["generated"] == 2 and stats["cached"] == 1
    assert all(e.reasoning for e in read_examples(tmp_path / "out" / "train.jsonl"))


async def test_wrong_path_is_fatal_not_a_dataset_of_failures(chat_server, example_factory, dataset_writer, tmp_path):
    src = dataset_writer(tmp_path / "ds", [example_factory(i) for i in range(3)])
    wrong = Target(f"http://127.0.0.1:{chat_server.port}/api/v2", "reasoner", None)
    with AnswerCache.in_data_dir(tmp_path / "data") as cache, pytest.raises(EndpointError, match="base URL"):
        await enrich_dataset(src, tmp_path / "out", EnrichSection(**FAST), wrong, cache)
    assert not (tmp_path / "out").exists()


async def test_a_run_served_from_the_cache_needs_no_endpoint(chat_server, example_factory, dataset_writer, tmp_path):
    src = dataset_writer(tmp_path / "ds", [example_factory(i) for i in range(5)])
    with AnswerCache.in_data_dir(tmp_path / "data") as cache:
        await enrich_dataset(src, tmp_path / "out", EnrichSection(**FAST), target(chat_server), cache)
        await chat_server.stop()
        again = await enrich_dataset(src, tmp_path / "out2", EnrichSection(**FAST), target(chat_server), cache)
    assert again["cached"] == 5 and again["requests"] == 0
