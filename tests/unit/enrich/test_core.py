import pytest

from lorafleet.services.enrich import core
from lorafleet.services.enrich.pipeline import resolve_target
from lorafleet.shared.config import EnrichSection
from lorafleet.shared.errors import ConfigError
from lorafleet.shared.problems import TrainExample

CODE = "n = int(input())\nvalues = list(map(int, input().split()))\nprint(sum(values) + n)\n"


def example(**kw) -> TrainExample:
    fields = dict(id="e1", problem_id="p1", source="synthetic", statement="Sum the list.", code=CODE)
    fields.update(kw)
    return TrainExample(**fields)


def test_defaults_are_the_spec_ones():
    cfg = EnrichSection()
    assert core.sampling_params(cfg) == {"temperature": 0.3, "max_tokens": 1024}
    user = core.build_messages(example())[-1]["content"]
    assert user == core.REASONING_PROMPT.format(statement="Sum the list.", code=CODE.strip())


def test_prompt_template_and_starter_code():
    msgs = core.build_messages(example(starter_code="def f(x):"), "S={statement}|C={code}")
    assert msgs[-1]["content"] == "S=Sum the list.\n\nStarter code:\ndef f(x):|C=" + CODE.strip()


def test_cache_key_addresses_model_prompt_and_params():
    msgs = core.build_messages(example())
    base = core.cache_key("m", msgs, {"temperature": 0.3, "max_tokens": 1024})
    assert base == core.cache_key("m", msgs, {"max_tokens": 1024, "temperature": 0.3})
    assert base != core.cache_key("other", msgs, {"temperature": 0.3, "max_tokens": 1024})
    assert base != core.cache_key("m", msgs, {"temperature": 0.7, "max_tokens": 1024})
    assert base != core.cache_key("m", core.build_messages(example(statement="x")), {"temperature": 0.3, "max_tokens": 1024})


@pytest.mark.parametrize(
    "text, finish, expected",
    [
        ("", "stop", "empty"),
        ("  \n ", "stop", "empty"),
        ("We add the numbers and then", "length", "truncated"),
        ("print(", "stop", "too_short"),
        ("Sum them", "stop", "too_short"),
        ("Read input:\nvalues = list(map(int, input().split()))\nprint(sum(values) + n)\n", "stop", "contains_code"),
        ("Like this:\n```python\nprint(sum(values) + n)\n```", "stop", "contains_code"),
        ("Read n, read the values, print their sum plus n. O(n).", "stop", None),
        ("Use a loop:\n```python\nfor v in values: total += v\n```", "stop", None),
    ],
)
def test_check_trace(text, finish, expected):
    assert core.check_trace(text, finish, CODE) == expected


def test_one_line_solution_pasted_back_is_caught():
    assert core.check_trace("Answer:\nprint(int(input()) * 3)", "stop", "print(int(input()) * 3)\n") == "contains_code"
    assert core.check_trace("Multiply the input by 3.", "stop", "print(int(input()) * 3)\n") is None


def test_apply_fallback_only_when_allowed():
    e = example()
    assert core.apply(e, "failed", None, allow_fallback=False) == (e, False)
    got, used = core.apply(e, "failed", None, allow_fallback=True)
    assert used and got.reasoning == core.FALLBACK_REASONING
    assert core.apply(e, "rejected", None, allow_fallback=True) == (e, False)
    assert core.apply(e, "generated", "why", False)[0].reasoning == "why"


def test_stats_add_up_by_reason():
    s = core.Stats()
    for outcome, reason in [("generated", None), ("cached", None), ("passthrough", None),
                            ("rejected", "empty"), ("rejected", "truncated"), ("rejected", "empty"), ("failed", "http_500")]:
        s.add(outcome, reason)
    d = s.to_dict()
    assert d["total"] == 7 and d["enriched"] == 2 and d["rejected"] == 3 and d["failed"] == 1
    assert d["rejected_by_reason"] == {"empty": 2, "truncated": 1}
    assert d["failed_by_reason"] == {"http_500": 1}
    assert d["generated"] + d["cached"] + d["passthrough"] + d["rejected"] + d["failed"] == d["total"]
    assert core.too_many_failures(s, 0.1) and not core.too_many_failures(s, 0.2)


def test_resolve_target():
    assert resolve_target(EnrichSection(), env={}) is None
    t = resolve_target(EnrichSection(), env={"LORAFLEET_ENRICH_ENDPOINT": "http://h:1/v1", "LORAFLEET_ENRICH_MODEL": "m",
                                             "LORAFLEET_ENRICH_API_KEY": "k"})
    assert (t.endpoint, t.model, t.api_key) == ("http://h:1/v1", "m", "k")
    cfg = EnrichSection(endpoint="http://cfg:2", model="c", api_key_env="MY_KEY")
    t = resolve_target(cfg, env={"LORAFLEET_ENRICH_ENDPOINT": "http://h:1", "MY_KEY": "s"})
    assert (t.endpoint, t.model, t.api_key) == ("http://cfg:2", "c", "s")
    with pytest.raises(ConfigError, match="no model"):
        resolve_target(EnrichSection(endpoint="http://h:1"), env={})
    with pytest.raises(ConfigError, match="not an http"):
        resolve_target(EnrichSection(endpoint="h:1", model="m"), env={})


def test_only_failures_a_retry_could_fix_fail_the_job():
    s = core.Stats()
    for _ in range(5):
        s.add("failed", "http_400")  # e.g. the prompt is longer than the model's context
    s.add("generated")
    assert not core.too_many_failures(s, 0.1)
    s.add("failed", "http_503")
    s.add("failed", "timeout")
    assert core.too_many_failures(s, 0.1)
    assert core.is_transient("http_429") and core.is_transient("connection") and not core.is_transient("http_422")


def test_prompt_template_is_checked_when_the_config_loads():
    assert EnrichSection(prompt="Why does {code} solve {statement}?").prompt
    for bad in ("uses {foo}", "no placeholder at all", "unbalanced { brace {statement}"):
        with pytest.raises(ValueError, match="enrich.prompt"):
            EnrichSection(prompt=bad)


def test_a_trace_with_a_code_fence_is_rejected():
    # The trainer puts reasoning right before the ```python block; an unmatched fence breaks the format.
    trace = "Read the number.\n```\nthen double it"
    assert core.check_trace(trace, "stop", "print(int(input()) * 2)") == "code_fence"
    assert core.check_trace("Read the number, then double it.", "stop", "print(int(input()) * 2)") is None
