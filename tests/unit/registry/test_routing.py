from collections import Counter

import pytest

from lorafleet.services.registry import core
from lorafleet.services.registry.routing import Router, hash_unit, pick, route_table
from lorafleet.services.registry.settings import RegistrySettings

from registry_helpers import INFO, NOW, evaluated

S = RegistrySettings(ab_traffic=0.2)


def test_routes_split_by_traffic_and_are_sticky():
    st = core.register(None, evaluated(), INFO, 5, NOW, S).state
    st = core.promote(st, "python-lora", 1, NOW).state
    st = core.register(st, evaluated(version=2), INFO, 6, NOW, S).state
    table = route_table(st)
    arms = Counter(pick(table, f"req-{i}").version for i in range(20000))
    assert abs(arms[2] / 20000 - 0.2) < 0.015 and set(arms) == {1, 2}
    assert all(pick(table, f"req-{i}") == pick(route_table(st), f"req-{i}") for i in range(100))
    target = pick(table, "some-key")
    assert target.lora_int_id in (5, 6) and target.uri.startswith("obj://")


def test_first_version_competes_with_base_model():
    st = core.register(None, evaluated(), INFO, 5, NOW, S).state
    arms = {pick(route_table(st), f"k{i}").arm for i in range(200)}
    assert arms == {"base", "candidate"}


def test_hash_unit_is_uniform_enough_and_stable():
    assert hash_unit("s", "k") == hash_unit("s", "k")
    xs = [hash_unit("salt", str(i)) for i in range(10000)]
    assert 0.48 < sum(xs) / len(xs) < 0.52


def test_router_cache_apply_and_unknown():
    st = core.register(None, evaluated(), INFO, 5, NOW, S).state
    router = Router(kv=None)
    router.apply("adapter.python-lora", st.model_dump_json().encode(), 3)
    assert router.route("python-lora", "x").adapter_name == "python-lora"
    router.apply("adapter.python-lora", b"", 2)  # stale revision ignored
    assert "python-lora" in router.tables
    with pytest.raises(core.RegistryError, match="unknown adapter"):
        router.route("nope", "x")
