"""The production distribution, the held-out slice, its pass@1 report, the request form and the JSON summary."""

from __future__ import annotations

import json

import pytest

from lorafleet.demo.load import request_body
from lorafleet.demo.measure import improved, slice_report
from lorafleet.demo.production import exclude_near_duplicates, production_pairs, split_production
from lorafleet.demo.summary import stage_seconds, summary_dict, write_json
from lorafleet.shared import synthetic


def test_production_is_wider_than_the_first_training_set_and_the_slice_is_never_traffic():
    split = split_production()
    first = {(p.meta["family"], p.meta["k"]) for p in synthetic.lora_problems("python", "train")}
    first_eval = set(synthetic.held_out_pairs("python"))
    pairs = {(p.meta["family"], p.meta["k"]) for p in split.traffic + split.heldout}
    assert pairs <= set(production_pairs())
    assert not pairs & first and not pairs & first_eval  # nothing v1 trained or was gated on
    assert {f for f, _ in pairs} == set(synthetic.PRODUCTION_TYPES)
    # no first-run statement is worded like a production one (the wording is what is new)
    first_statements = {p.statement for p in synthetic.lora_problems("python", "train")}
    assert not first_statements & {p.statement for p in split.traffic + split.heldout}
    traffic_ids = {p.id for p in split.traffic}
    assert split.heldout and not traffic_ids & {p.id for p in split.heldout}
    assert len(split.heldout) >= 45  # enough problems for a CI of about ±0.1
    # every production family is measured
    assert {p.meta["family"] for p in split.heldout} >= set(synthetic.PRODUCTION_TYPES)
    assert split_production() == split  # deterministic


def test_near_duplicates_of_traffic_are_dropped_from_the_slice_by_ingests_dedup():
    a = synthetic.make_problem("sum_the_plus", 7)
    same = a.model_copy(update={"id": "other/x", "statement": "  " + a.statement.upper().replace(". ", ".\n")})
    other_k = synthetic.make_problem("sum_the_plus", 8)
    kept, dropped = exclude_near_duplicates([same, other_k], [a])
    assert [p.id for p in dropped] == ["other/x"]
    assert [p.id for p in kept] == [other_k.id]  # K=8 vs K=7 is another problem (numbers differ)


def test_production_statements_tokenise_into_tokens_the_base_was_pretrained_on():
    # TINY_MODEL_NOTES.md: a token never produced in pretraining breaks sampled outputs.
    from lorafleet.services.trainer.tiny_model import Recipe, pretraining_corpus

    import re

    corpus = "\n".join(pretraining_corpus(Recipe()))
    known_words = set(re.findall(r"[a-z]+", corpus.lower()))
    for p in synthetic.lora_problems(None, "train"):  # the LoRA statements the tokenizer was trained on
        known_words.update(re.findall(r"[a-z]+", p.statement.lower()))
    numbers = set(re.findall(r" (\d+)", corpus))
    for p in split_production().traffic:
        assert str(p.meta["k"]) in numbers, p.id
        assert set(re.findall(r"[a-z]+", p.statement.lower())) <= known_words, p.id


def test_slice_report_cis_and_the_improvement_rule():
    ids = [f"p{i}" for i in range(40)]
    v1 = {p: (1.0 if i % 2 else 0.0) for i, p in enumerate(ids)}
    v2 = {p: 1.0 for p in ids}
    base = {p: 0.0 for p in ids}
    r = slice_report({"base": base, "v1": v1, "v2": v2})
    assert r["base"] == {"pass_at_1": 0.0, "ci95": [0.0, 0.0], "n_problems": 40}
    assert r["v1"]["pass_at_1"] == 0.5 and r["v1"]["ci95"][0] < 0.5 < r["v1"]["ci95"][1]
    assert r["delta_v2_v1"]["mean"] == 0.5 and r["delta_v2_v1"]["ci95"][0] > 0
    assert improved(r)
    same = slice_report({"v1": v1, "v2": dict(v1)})
    assert same["delta_v2_v1"]["ci95"] == [0.0, 0.0] and not improved(same)
    assert not improved({"v1": r["v1"]})  # no v2 measured: never an improvement
    with pytest.raises(ValueError, match="other problems"):
        slice_report({"v1": v1, "v2": {"p0": 1.0}})


def test_request_body_carries_the_statement_and_the_tests_for_the_gateway():
    p = synthetic.make_problem("word_then_bangs", 21)
    body = request_body(p, temperature=0.8, max_tokens=64, seed=3)
    assert body["messages"][-1] == {"role": "user", "content": p.statement}
    tests = body["extra_body"]["lorafleet"]["tests"]
    assert tests == [{"kind": "stdio", "input": t.input, "output": t.output} for t in p.tests] and len(tests) == 4
    assert body["n"] == 1 and body["seed"] == 3
    json.dumps(body)  # what the openai client sends must be JSON


def test_summary_json_has_the_issue_fields(tmp_path):
    data = summary_dict(
        adapter_name="a", versions=[{"version": 1, "status": "active", "pass_at_1": 0.9}],
        production_eval={"base": {"pass_at_1": 0.0, "ci95": [0, 0], "n_problems": 3},
                         "delta_v2_v1": {"mean": 0.2, "ci95": [0.1, 0.3]}},
        traffic={"requests": 10, "judged": 9, "successes": 4}, runs=["r1", "r2"],
        stages=stage_seconds({"startup": 7.04}, []), decisions=[], improved=True, failure=None)
    path = tmp_path / "out" / "summary.json"
    write_json(path, data)
    back = json.loads(path.read_text())
    for key in ("adapter_name", "versions", "production_eval", "traffic", "runs", "stages"):
        assert key in back
    assert back["stages"] == {"startup": 7.0}
    assert not list(path.parent.glob(".*tmp"))
