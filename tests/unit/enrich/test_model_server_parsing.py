import pytest

from lorafleet.services.enrich.model_server import BadRequest, parse_adapters, parse_request
from lorafleet.shared.errors import ConfigError

MSG = [{"role": "user", "content": "hi"}]


def test_parse_request_defaults_and_values():
    model, messages, s, stream, usage = parse_request({"model": "m", "messages": MSG})
    assert (model, messages, stream, usage) == ("m", MSG, False, False)
    assert (s.n, s.max_tokens, s.temperature, s.top_p, s.seed) == (1, 512, 1.0, 1.0, None)
    _, _, s, stream, usage = parse_request({"model": "m", "messages": MSG, "n": 3, "max_tokens": 9, "temperature": 0,
                                            "top_p": 0.9, "seed": 4, "stream": True, "stream_options": {"include_usage": True}})
    assert (s.n, s.max_tokens, s.temperature, s.top_p, s.seed, stream, usage) == (3, 9, 0.0, 0.9, 4, True, True)


@pytest.mark.parametrize("body, match", [
    ([], "JSON object"),
    ({"messages": MSG}, "model"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages"),
    ({"model": "m", "messages": MSG, "n": 0}, "between"),
    ({"model": "m", "messages": MSG, "n": 1.5}, "int"),
    ({"model": "m", "messages": MSG, "temperature": "hot"}, "float"),
    ({"model": "m", "messages": MSG, "stop": ["x"]}, "stop"),
])
def test_parse_request_rejects(body, match):
    with pytest.raises(BadRequest, match=match):
        parse_request(body)


def test_parse_adapters(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text("{}")
    assert parse_adapters([f"py={tmp_path / 'a'}"]) == {"py": (tmp_path / "a").resolve()}
    for bad, match in [("py", "NAME=PATH"), (f"py={tmp_path}", "adapter_config.json"), (f"b@d={tmp_path / 'a'}", "name")]:
        with pytest.raises(ConfigError, match=match):
            parse_adapters([bad])
    with pytest.raises(ConfigError, match="twice"):
        parse_adapters([f"py={tmp_path / 'a'}", f"py={tmp_path / 'a'}"])


def test_parse_completion_request():
    from lorafleet.services.enrich.model_server import parse_completion_request

    model, prompt, s, stream, usage = parse_completion_request({"model": "m", "prompt": ["def f():"], "max_tokens": 3})
    assert (model, prompt, s.max_tokens, stream, usage) == ("m", "def f():", 3, False, False)
    for bad in ({"model": "m"}, {"model": "m", "prompt": ["a", "b"]}, {"prompt": "x"}, []):
        with pytest.raises(BadRequest):
            parse_completion_request(bad)
