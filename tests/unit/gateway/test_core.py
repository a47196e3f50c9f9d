"""The gateway's pure core: validation, route keys, backend choice, the outcome rule, feedback bookkeeping."""

from __future__ import annotations

import json

import pytest

from lorafleet.services.gateway import core
from lorafleet.services.gateway.core import ApiError, BackendState, ChoiceResult, Pending, PendingTable

MSG = [{"role": "user", "content": "Read n, print n + 1."}]


def chat(**body):
    return core.parse_chat({"model": "python-lora", "messages": MSG, **body})


# --------------------------------------------------------------------------- requests


def test_malformed_json_and_missing_fields_name_the_field():
    with pytest.raises(ApiError) as e:
        core.parse_json(b"{not json")
    assert e.value.status == 400 and "not valid JSON" in e.value.message
    with pytest.raises(ApiError, match="JSON object"):
        core.parse_json(b"[1, 2]")
    with pytest.raises(ApiError) as e:
        core.parse_chat({"model": "python-lora"})
    assert e.value.param == "messages" and e.value.body()["error"]["type"] == "invalid_request_error"
    with pytest.raises(ApiError) as e:
        core.parse_chat({"messages": MSG})
    assert e.value.param == "model"
    with pytest.raises(ApiError) as e:
        core.parse_chat({"model": "m", "messages": [{"content": "x"}]})
    assert e.value.param == "messages[0]"
    with pytest.raises(ApiError) as e:
        core.parse_completion({"model": "m"})
    assert e.value.param == "prompt"


@pytest.mark.parametrize("field, value", [("n", 0), ("n", 1.5), ("temperature", 3), ("max_tokens", 0),
                                          ("seed", "7"), ("stream", "yes"), ("user", 5), ("top_p", True)])
def test_bad_sampling_fields(field, value):
    with pytest.raises(ApiError) as e:
        chat(**{field: value})
    assert e.value.status == 400 and e.value.param == field


def test_parsed_request_keeps_sampling_and_strips_the_lorafleet_field():
    p = chat(n=3, temperature=0.5, max_tokens=9, seed=4, stream=True, user="u1",
             lorafleet={"tests": [{"kind": "stdio", "input": "1\n", "output": "2\n"}], "limits": {"time_s": 1}})
    assert p.n == 3 and p.stream and p.user == "u1" and p.problem == MSG[0]["content"]
    assert "lorafleet" not in p.body and p.body["seed"] == 4 and p.body["messages"] == MSG
    assert p.tests[0].kind == "stdio" and p.limits.time_s == 1
    p = core.parse_chat({"model": "m", "messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "first"}]},
        {"role": "assistant", "content": "a"}, {"role": "user", "content": "last"}]})
    assert p.problem == "last" and p.tests is None
    c = core.parse_completion({"model": "m", "prompt": ["def f():"], "lorafleet": {"tests": [
        {"kind": "assert", "script": "assert f() == 1"}]}})
    assert c.body["prompt"] == "def f():" and c.problem == "def f():" and c.tests[0].kind == "assert"


@pytest.mark.parametrize("tests, where, what", [
    ([{"kind": "stdio", "input": "1"}], "lorafleet.tests[0]", "without output"),
    ([{"kind": "stdio", "input": "1", "output": "2"}, {"kind": "shell", "script": "ls"}], "lorafleet.tests[1]", "kind"),
    ([{"kind": "call", "args": [1]}], "lorafleet.tests[0]", "fn_name"),
    ([{"kind": "assert", "script": "  "}], "lorafleet.tests[0]", "script"),
    ([{"kind": "stdio", "input": "1", "output": "2", "stdin": "x"}], "lorafleet.tests[0]", "stdin"),
    (["print(1)"], "lorafleet.tests[0]", "not a valid test"),
])
def test_an_invalid_test_is_named(tests, where, what):
    with pytest.raises(ApiError) as e:
        chat(lorafleet={"tests": tests})
    assert e.value.status == 400 and e.value.param == where and what in e.value.message
    assert '"kind": "stdio"' in e.value.message  # the way out: the valid forms


def test_lorafleet_field_shape():
    for bad, param in (({"tests": []}, "lorafleet.tests"), ("x", "lorafleet"), ({"test": []}, "lorafleet"),
                       ({"limits": {"time_s": "slow"}}, "lorafleet.limits")):
        with pytest.raises(ApiError) as e:
            chat(lorafleet=bad)
        assert e.value.param == param
    with pytest.raises(ApiError, match="at most"):
        chat(lorafleet={"tests": [{"kind": "stdio", "input": "", "output": ""}] * (core.MAX_TESTS + 1)})
    assert chat(lorafleet={"tests": [{"kind": "call", "fn_name": "f", "args": [], "expected": None}]}).tests


def test_route_key_order():
    assert core.route_key("u", "h", "rid") == "u"
    assert core.route_key(None, "h", "rid") == "h"
    assert core.route_key("", " ", "rid") == "rid"


def test_unknown_model_lists_what_exists():
    e = core.unknown_model("gpt-4", ["python-lora", "math-lora"], ["tiny"])
    assert e.status == 404 and "math-lora, python-lora" in e.message and "tiny" in e.message and e.param == "model"


def test_base_models_and_base_for():
    models = {"data": [{"id": "tiny", "parent": None}, {"id": "py:v1", "parent": "tiny"}, {"id": "other"}]}
    assert core.base_model_of(models) == ["tiny", "other"]
    assert core.base_for(["awq", "tiny"], ["other", "tiny"]) == "tiny"
    # vLLM behind `model serve --engine vllm`: the base through its zero adapter comes first, the raw base stays
    vllm = {"data": [{"id": "tiny@nolora", "parent": None}, {"id": "tiny", "parent": "tiny@nolora"},
                     {"id": "py:v1", "parent": "tiny@nolora"}]}
    assert core.base_model_of(vllm) == ["tiny", "tiny@nolora"]
    assert core.base_for([None, "tiny"], core.base_model_of(vllm)) == "tiny"
    assert core.base_for([None, "hub/name"], ["served"]) == "served"
    assert core.base_for([], []) is None
    assert core.lora_name("python-lora", 3) == "python-lora:v3"


# --------------------------------------------------------------------------- backends


def test_least_in_flight_dead_skipped_and_retried_later():
    a, b, c = BackendState("a", in_flight=3), BackendState("b", in_flight=1), BackendState("c", in_flight=1, dead_until=10.0)
    assert core.choose_backend([a, b, c], now=5.0).url == "b"
    assert core.choose_backend([a, b, c], now=5.0, exclude={"b"}).url == "a"
    c.in_flight = 0
    assert core.choose_backend([a, b, c], now=10.0).url == "c"  # retry time has come
    assert core.choose_backend([c], now=5.0) is None
    assert core.retry_after([c], now=5.0, default=2.0) == 5
    assert core.retry_after([], now=5.0, default=2.0) == 2


def test_ties_go_round_robin():
    states = [BackendState("a"), BackendState("b"), BackendState("c")]
    picked = [core.choose_backend(states, 0.0, turn=t).url for t in range(6)]
    assert sorted(picked) == ["a", "a", "b", "b", "c", "c"]


def test_to_unload():
    assert core.to_unload({("p", 1), ("p", 2), ("m", 1)}, {("p", 2), ("m", 1)}) == {("p", 1)}


# --------------------------------------------------------------------------- outcomes


def test_confidence_rule():
    assert core.judged_outcome([ChoiceResult("passed", 4, 4)]) == (True, 0.9375, 0)
    assert core.judged_outcome([ChoiceResult("passed", 1, 1)]) == (True, 0.5, 0)
    assert core.judged_outcome([ChoiceResult("wrong_answer", 2, 3)]) == (False, 1.0, 0)
    assert core.judged_outcome([ChoiceResult("time_limit", 0, 3)]) == (False, 1.0, 0)
    assert core.judged_outcome([ChoiceResult("no_code", 0, 3)]) == (False, 1.0, 0)
    assert core.judged_outcome([ChoiceResult("sandbox_error", 0, 3)]) == (False, 0.0, 0)
    # n choices: the first that passes every test speaks for the request
    assert core.judged_outcome([ChoiceResult("runtime_error", 0, 3), ChoiceResult("passed", 3, 3)]) == (True, 0.875, 1)


def entry(rid="r1", tests=None, created=0.0, texts=("```python\nprint(1)\n```",)):
    answer = json.dumps({"choices": [{"index": i, "message": {"content": t}} for i, t in enumerate(texts)]}).encode()
    return Pending(request_id=rid, adapter="python-lora", version=2, route_key="u1", latency_ms=12.3456,
                   problem="print 1", answer=answer, tests=tests, created=created)


def test_outcome_event_uses_the_request_id_and_the_chosen_choice():
    from lorafleet.shared.problems import TestCase

    tests = [TestCase(kind="stdio", input="", output="1\n")]
    e = entry(tests=tests, texts=["no code here but text", "```python\nprint(1)\n```"]).outcome(True, 0.5, 1)
    assert e.event_id == e.request_id == "r1" and e.version == 2 and e.request_key == "u1"
    assert e.solution == "print(1)" and e.tests == [{"kind": "stdio", "input": "", "output": "1\n"}]
    assert e.latency_ms == 12.346 and json.loads(e.to_bytes())["adapter_name"] == "python-lora"


def test_feedback_table_once_then_409_unknown_404_expired_404():
    table = PendingTable(wait_s=10, max_entries=3)
    table.add(entry("a"))
    assert table.take_feedback("a", now=1).request_id == "a"
    with pytest.raises(ApiError) as e:
        table.take_feedback("a", now=2)
    assert e.value.status == 409
    with pytest.raises(ApiError) as e:
        table.take_feedback("zzz", now=2)
    assert e.value.status == 404
    table.add(entry("b", created=0))
    with pytest.raises(ApiError) as e:
        table.take_feedback("b", now=11)
    assert e.value.status == 404
    judged = entry("j", tests=[object()], created=20)
    judged.state = "judging"
    table.add(judged)
    with pytest.raises(ApiError) as e:
        table.take_feedback("j", now=21)
    assert e.value.status == 409 and "judged" in e.value.message


def test_feedback_table_expires_and_stays_bounded():
    table = PendingTable(wait_s=10, max_entries=2)
    for i in range(3):
        table.add(entry(f"r{i}", created=i))
    assert list(table.entries) == ["r1", "r2"] and table.evicted == 1
    gone = table.expire(now=11.5)
    assert [g.request_id for g in gone] == ["r1"] and table.expired == 1 and list(table.entries) == ["r2"]


def test_feedback_body():
    assert core.parse_feedback({"request_id": "r", "success": True}) == ("r", True, 1.0)
    for bad, param in (({"success": True}, "request_id"), ({"request_id": "r"}, "success"),
                       ({"request_id": "r", "success": True, "confidence": 1.5}, "confidence")):
        with pytest.raises(ApiError) as e:
            core.parse_feedback(bad)
        assert e.value.param == param


# --------------------------------------------------------------------------- answers


def test_answer_texts_and_stream_text():
    assert core.answer_texts("chat", {"choices": [{"index": 1, "message": {"content": "b"}},
                                                  {"index": 0, "message": {"content": "a"}}]}) == ["a", "b"]
    assert core.answer_texts("completion", {"choices": [{"index": 0, "text": "x"}]}) == ["x"]
    s = core.StreamText("chat")
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
              {"choices": [{"index": 0, "delta": {"content": "he"}}]},
              {"choices": [{"index": 1, "delta": {"content": "x"}}]},
              {"choices": [{"index": 0, "delta": {"content": "llo"}, "finish_reason": "stop"}]}]
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    for i in range(0, len(raw), 7):  # arbitrary chunk boundaries
        s.feed(raw[i:i + 7])
    assert s.texts(2) == ["hello", "x"]
    assert core.texts_of("chat", True, raw, 1) == ["hello", "x"]
    assert core.texts_of("completion", False, b'{"choices": [{"index": 0, "text": "t"}]}', 1) == ["t"]
    assert core.texts_of("chat", False, b"not json", 1) == []


def test_spool_bookkeeping():
    assert core.spool_name("a/b..c") == "a_b__c.json"
    assert core.spool_admit({"x.json"}, "x.json", 1) == "have"
    assert core.spool_admit({"x.json"}, "y.json", 1) == "full"
    assert core.spool_admit({"x.json"}, "y.json", 2) == "add"
