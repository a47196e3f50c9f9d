"""Each loader on small files in the real schema (tests/fixtures/ingest/make_fixtures.py)."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from collections import Counter

import pytest

from lorafleet.services.ingest.normalise import Malformed, listish, parse_megabytes, parse_seconds
from lorafleet.services.ingest.sources import livecodebench, problems
from lorafleet.shared.config import SourceSection
from lorafleet.shared.errors import LorafleetError


def load(kind: str, path, **kw):
    out = list(problems(SourceSection(type=kind, path=str(path), **kw)))
    good = {p.id: p for p in out if not isinstance(p, Malformed)}
    bad = Counter(m.reason for m in out if isinstance(m, Malformed))
    return good, bad


def test_codecontests(fixtures):
    good, bad = load("codecontests", fixtures / "codecontests.parquet")
    assert bad == {"no_tests": 1, "file_io": 1}
    s = good["codecontests/1000_A. Sum"]
    # Python 3 only: the Python 2, C++ and `incorrect_solutions` programs are not candidates
    assert len(s.solutions) == 3 and not any("raw_input" in c or "#include" in c for c in s.solutions)
    assert s.meta["skipped_python2"] == 1
    assert [t.input for t in s.tests] == ["1 2\n", "-5 7\n", "1000 1000\n", "0 0\n"]  # public, private, generated
    assert s.meta["tests_first"] == 2
    assert (s.difficulty, s.difficulty_raw) == ("easy", "A (cf_rating 800)")
    assert s.limits.time_s == 2.0 and s.limits.memory_mb == 256
    assert s.tags == ["implementation", "math"]
    primes = good["codecontests/1001_B. Primes"]
    assert (primes.difficulty, primes.difficulty_raw) == ("medium", "MEDIUM")  # no rating: the enum decides
    assert primes.limits.time_s == 0.5
    assert good["codecontests/1002_C. Stack"].limits.time_s == 1.5


def test_apps(fixtures):
    good, bad = load("apps", fixtures / "apps.jsonl")
    assert bad == {"bad_json": 1, "non_utf8": 1, "bad_json:input_output": 1, "no_tests": 1}
    assert set(good) == {"apps/10", "apps/11", "apps/12", "apps/13"}
    assert good["apps/11"].difficulty == "medium" and good["apps/11"].difficulty_raw == "interview"
    call = good["apps/13"]
    assert call.starter_code == "def add_two(a, b):"
    assert [(t.kind, t.fn_name, t.args, t.expected) for t in call.tests][0] == ("call", "add_two", [1, 2], 3)
    assert good["apps/10"].tests[0].kind == "stdio" and len(good["apps/10"].solutions) == 2


def test_taco(fixtures):
    good, bad = load("taco", fixtures / "taco")
    assert bad == {"bad_json:solutions": 1, "no_tests": 1}
    first = good["taco/0"]
    assert first.tags == ["Mathematics", "Amortized analysis"]
    assert first.contest_date == "2021-03-04" and first.limits.time_s == 1.0 and first.limits.memory_mb == 256
    stack = good["taco/1"]
    assert (stack.difficulty, stack.difficulty_raw) == ("hard", "MEDIUM_HARD")
    assert stack.meta["raw_tags"] == ["data structures"]


def test_livecodebench_private_tests_and_functional(fixtures):
    good, bad = load("livecodebench", fixtures / "livecodebench.jsonl")
    assert bad == {"bad_private_tests": 2}  # the hostile pickle and the non-base64 field
    rev = good["livecodebench/abc300_a"]
    assert [t.input for t in rev.tests] == ["hello world\n", "a b c\n", "one\n"]  # public, then decoded private
    assert rev.contest_date == "2024-03-01" and rev.solutions == []
    fn = good["livecodebench/3000"]
    assert [(t.kind, t.fn_name, t.args, t.expected) for t in fn.tests] == [
        ("call", "countEven", [[1, 2, 4]], 2), ("call", "countEven", [[1, 3]], 0)]


def test_livecodebench_unpickler_refuses_globals(capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    blob = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(Malformed) as exc:
        livecodebench.decode_private(blob)
    assert exc.value.reason == "bad_private_tests" and "refusing global" in exc.value.detail
    assert "pwned" not in capsys.readouterr().out
    # a pickled non-str (even without globals) is refused too
    with pytest.raises(Malformed):
        livecodebench.decode_private(base64.b64encode(zlib.compress(pickle.dumps([1, 2]))).decode())
    ok = json.dumps([{"input": "1", "output": "2", "testtype": "stdin"}])
    assert livecodebench.decode_private(base64.b64encode(zlib.compress(pickle.dumps(ok))).decode())[0]["output"] == "2"


def test_livecodebench_zip_bomb_is_capped(monkeypatch):
    monkeypatch.setattr(livecodebench, "MAX_PRIVATE_BYTES", 1000)
    blob = base64.b64encode(zlib.compress(pickle.dumps("x" * 100_000))).decode()
    with pytest.raises(Malformed) as exc:
        livecodebench.decode_private(blob)
    assert exc.value.reason == "private_tests_too_large"


def test_humaneval_and_own_formats(fixtures):
    good, bad = load("humaneval", fixtures / "humaneval.jsonl.gz")
    he = good["humaneval/0"]
    assert he.solutions == [he.statement + "    return a + b\n"]
    assert he.tests[0].kind == "assert" and he.tests[0].entry_point == "add" and "def check" in he.tests[0].script
    own, bad = load("lorafleet", fixtures / "lorafleet.jsonl")
    assert set(own) == {"lorafleet/max", "lorafleet/prime"} and bad == {"bad_problem": 1}
    assert own["lorafleet/prime"].domains == ["math"]
    pool, bad = load("production", fixtures / "production.jsonl")
    assert set(pool) == {"production/abc123"} and bad == {"no_tests": 1}
    assert pool["production/abc123"].source == "production"


def test_package_humaneval_has_164_problems():
    out = list(problems(SourceSection(type="humaneval", path=__import__(
        "lorafleet.services.ingest.sources.humaneval", fromlist=["x"]).default_path())))
    assert len(out) == 164 and all(not isinstance(p, Malformed) and len(p.solutions) == 1 for p in out)


def test_synthetic_source_uses_shared_families():
    train = [p for p in problems(SourceSection(type="synthetic"), ["python"])]
    held = [p for p in problems(SourceSection(type="synthetic", role="validation"), ["python"])]
    assert train and held and not {p.id for p in train} & {p.id for p in held}
    assert all(p.domains == ["python"] and p.solutions for p in train)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(LorafleetError, match="not found"):
        list(problems(SourceSection(type="apps", path=str(tmp_path / "nope.jsonl"))))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(LorafleetError, match="unsupported file type"):
        list(problems(SourceSection(type="apps", path=str(tmp_path / "x.csv"))))
    from lorafleet.services.ingest.sources import check_type

    with pytest.raises(LorafleetError, match="allowed: codecontests, apps"):
        check_type("appz")


def test_truncated_gzip_is_a_clear_error(tmp_path, fixtures):
    data = (fixtures / "humaneval.jsonl.gz").read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(LorafleetError, match="can't read it"):
        list(problems(SourceSection(type="humaneval", path=str(tmp_path / "cut.jsonl.gz"))))


def test_field_parsers():
    assert parse_seconds("1 seconds") == 1.0 and parse_seconds("2.5 seconds") == 2.5 and parse_seconds("500 ms") == 0.5
    assert parse_seconds(None) is None
    assert parse_megabytes("256 megabytes") == 256 and parse_megabytes(268435456) == 256 and parse_megabytes("1 GB") == 1024
    assert listish("['Data structures', 'Sorting']") == ["Data structures", "Sorting"]
    assert listish("[\"it's\", 'b']") == ["it's", "b"]
    assert listish("[]") == [] and listish(None) == []


def test_own_format_rejects_incomplete_tests(tmp_path):
    rows = [
        {"id": "x/1", "source": "x", "statement": "s", "tests": [{"kind": "call", "args": [1]}]},
        {"id": "x/2", "source": "x", "statement": "s", "tests": [{"kind": "assert", "entry_point": "f"}]},
        {"id": "x/3", "source": "x", "statement": "s", "tests": [{"kind": "stdio", "input": "1"}]},
        {"id": "x/4", "source": "x", "statement": "s", "tests": [{"kind": "stdio", "input": "1", "output": "1"}]},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    good, bad = load("lorafleet", tmp_path / "p.jsonl")
    assert set(good) == {"x/4"} and bad == {"bad_test": 3}
