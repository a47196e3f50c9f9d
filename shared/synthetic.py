"""Parameterised stdin/stdout problem families for the tiny model (TINY_MODEL_NOTES.md).

Every problem is a family ("type") plus a constant K (and C for one family): an
English statement, 4 stdio tests and a reference solution.

- PRETRAIN_TYPES: integer arithmetic, used only to pretrain the tiny base.
- LORA_TYPES (python: list/string tasks; math: two-integer and digit tasks): never
  seen in pretraining, learned by the adapter.
- Held-out (type, K) pairs of the LoRA types never appear in training data: the
  evaluation set, so a base-vs-adapter gap means the adapter generalised over K.

Numbers are written with a space before them (" 7") so the tokenizer keeps each
whole number as one token; with digit-by-digit tokens the model never learned to
copy the constant from the statement.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal

from lorafleet.shared.problems import Problem, TestCase, TrainExample

Stage = Literal["pretrain", "lora", "production"]
K_VALUES = tuple(range(2, 26))
# Pretraining writes constants up to 40, so the base has trained embeddings for more numbers
# than the LoRA tasks use (TINY_MODEL_NOTES.md: a token never seen in pretraining breaks
# sampled outputs). Part of the pretraining recipe: changing it changes the shipped base.
PRETRAIN_K_VALUES = tuple(range(2, 41))
WORDS = (
    "cat dog sun moon tree book code lamp rain snow fish bird star leaf rock wind "
    "milk bread apple lemon river cloud stone green blue red"
).split()


@dataclass(frozen=True)
class Family:
    name: str
    stage: Stage
    domain: Literal["python", "math"]
    statement: str  # format fields: {k}, {c}
    code: str  # format fields: {k}, {c}
    make_input: Callable[[random.Random], str]
    answer: Callable[[str, int, int], str]  # (stdin, k, c) -> expected stdout


def _int(rng: random.Random) -> str:
    return str(rng.randint(0, 99))


def _two(rng: random.Random) -> str:
    return f"{rng.randint(0, 50)} {rng.randint(0, 50)}"


def _ints(rng: random.Random) -> str:
    return " ".join(str(rng.randint(0, 20)) for _ in range(rng.randint(3, 6)))


def _word(rng: random.Random) -> str:
    return rng.choice(WORDS)


def _nums(stdin: str) -> list[int]:
    return [int(x) for x in stdin.split()]


_READ_N = "n = int(input())\n"
_READ_AB = "a, b = map(int, input().split())\n"
_READ_LIST = "a = list(map(int, input().split()))\n"
_READ_WORD = "s = input()\n"

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        # ---- pretraining: integer arithmetic
        Family("mul_add", "pretrain", "math", "Read an integer n. Print n times {k} plus {c}.",
               _READ_N + "print(n * {k} + {c})", _int, lambda s, k, c: str(int(s) * k + c)),
        Family("sub", "pretrain", "math", "Read an integer n. Print n minus {k}.",
               _READ_N + "print(n - {k})", _int, lambda s, k, c: str(int(s) - k)),
        Family("mod", "pretrain", "math", "Read an integer n. Print the remainder of n divided by {k}.",
               _READ_N + "print(n % {k})", _int, lambda s, k, c: str(int(s) % k)),
        Family("div", "pretrain", "math", "Read an integer n. Print n divided by {k}, rounded down.",
               _READ_N + "print(n // {k})", _int, lambda s, k, c: str(int(s) // k)),
        Family("sq_add", "pretrain", "math", "Read an integer n. Print n squared plus {k}.",
               _READ_N + "print(n * n + {k})", _int, lambda s, k, c: str(int(s) ** 2 + k)),
        Family("gt", "pretrain", "math", "Read an integer n. Print YES if n is greater than {k}, otherwise print NO.",
               _READ_N + "print('YES' if n > {k} else 'NO')", _int, lambda s, k, c: "YES" if int(s) > k else "NO"),
        Family("two", "pretrain", "math", "Read two integers a and b. Print a times {k} plus b.",
               _READ_AB + "print(a * {k} + b)", _two, lambda s, k, c: str(_nums(s)[0] * k + _nums(s)[1])),
        # ---- LoRA, python: lists and strings
        Family("list_sum_add", "lora", "python", "Read a line of integers. Print their sum plus {k}.",
               _READ_LIST + "print(sum(a) + {k})", _ints, lambda s, k, c: str(sum(_nums(s)) + k)),
        Family("list_max_mul", "lora", "python", "Read a line of integers. Print the largest one times {k}.",
               _READ_LIST + "print(max(a) * {k})", _ints, lambda s, k, c: str(max(_nums(s)) * k)),
        Family("list_min_sub", "lora", "python", "Read a line of integers. Print the smallest one minus {k}.",
               _READ_LIST + "print(min(a) - {k})", _ints, lambda s, k, c: str(min(_nums(s)) - k)),
        Family("list_count_gt", "lora", "python", "Read a line of integers. Print how many of them are greater than {k}.",
               _READ_LIST + "print(len([x for x in a if x > {k}]))", _ints,
               lambda s, k, c: str(sum(1 for x in _nums(s) if x > k))),
        Family("list_each_mul", "lora", "python", "Read a line of integers. Print each of them times {k}, separated by spaces.",
               _READ_LIST + "print(' '.join(str(x * {k}) for x in a))", _ints,
               lambda s, k, c: " ".join(str(x * k) for x in _nums(s))),
        Family("word_repeat", "lora", "python", "Read a word. Print it repeated {k} times.",
               _READ_WORD + "print(s * {k})", _word, lambda s, k, c: s * k),
        Family("word_bang", "lora", "python", "Read a word. Print it followed by {k} exclamation marks.",
               _READ_WORD + "print(s + '!' * {k})", _word, lambda s, k, c: s + "!" * k),
        Family("word_len_add", "lora", "python", "Read a word. Print its length plus {k}.",
               _READ_WORD + "print(len(s) + {k})", _word, lambda s, k, c: str(len(s) + k)),
        # ---- production, python: the LoRA tasks as production users word them. No first-run
        # training example uses these statements; measured (docs/notes/issue-18.md), the first
        # adapter solves each about 20-50% of the time, so its verified answers teach a retrain.
        Family("sum_the_plus", "production", "python", "Read a line of integers. Print the sum plus {k}.",
               _READ_LIST + "print(sum(a) + {k})", _ints, lambda s, k, c: str(sum(_nums(s)) + k)),
        Family("largest_of_them_times", "production", "python", "Read a line of integers. Print the largest of them times {k}.",
               _READ_LIST + "print(max(a) * {k})", _ints, lambda s, k, c: str(max(_nums(s)) * k)),
        Family("largest_integer_times", "production", "python", "Read a line of integers. Print the largest integer times {k}.",
               _READ_LIST + "print(max(a) * {k})", _ints, lambda s, k, c: str(max(_nums(s)) * k)),
        Family("smallest_of_them_minus", "production", "python", "Read a line of integers. Print the smallest of them minus {k}.",
               _READ_LIST + "print(min(a) - {k})", _ints, lambda s, k, c: str(min(_nums(s)) - k)),
        Family("smallest_integer_minus", "production", "python", "Read a line of integers. Print the smallest integer minus {k}.",
               _READ_LIST + "print(min(a) - {k})", _ints, lambda s, k, c: str(min(_nums(s)) - k)),
        Family("how_many_are_greater", "production", "python", "Read a line of integers. Print how many are greater than {k}.",
               _READ_LIST + "print(len([x for x in a if x > {k}]))", _ints,
               lambda s, k, c: str(sum(1 for x in _nums(s) if x > k))),
        Family("word_times", "production", "python", "Read a word. Print it {k} times.",
               _READ_WORD + "print(s * {k})", _word, lambda s, k, c: s * k),
        Family("word_then_bangs", "production", "python", "Read a word. Print the word followed by {k} exclamation marks.",
               _READ_WORD + "print(s + '!' * {k})", _word, lambda s, k, c: s + "!" * k),
        # ---- LoRA, math: two integers and digits
        Family("tri_add", "lora", "math", "Read an integer n. Print the sum of the integers from 1 to n, plus {k}.",
               _READ_N + "print(n * (n + 1) // 2 + {k})", _int, lambda s, k, c: str(int(s) * (int(s) + 1) // 2 + k)),
        Family("absdiff_mul", "lora", "math", "Read two integers a and b. Print the absolute difference of a and b times {k}.",
               _READ_AB + "print(abs(a - b) * {k})", _two, lambda s, k, c: str(abs(_nums(s)[0] - _nums(s)[1]) * k)),
        Family("max2_add", "lora", "math", "Read two integers a and b. Print the larger of them plus {k}.",
               _READ_AB + "print(max(a, b) + {k})", _two, lambda s, k, c: str(max(_nums(s)) + k)),
        Family("summod", "lora", "math", "Read two integers a and b. Print a plus b, modulo {k}.",
               _READ_AB + "print((a + b) % {k})", _two, lambda s, k, c: str(sum(_nums(s)) % k)),
        Family("digit_sum_add", "lora", "math", "Read an integer n. Print the sum of its digits plus {k}.",
               _READ_N + "print(sum(int(d) for d in str(n)) + {k})", _int,
               lambda s, k, c: str(sum(int(d) for d in s.strip()) + k)),
    ]
}

PRETRAIN_TYPES = tuple(n for n, f in FAMILIES.items() if f.stage == "pretrain")
LORA_TYPES = tuple(n for n, f in FAMILIES.items() if f.stage == "lora")
PRODUCTION_TYPES = tuple(n for n, f in FAMILIES.items() if f.stage == "production")


def lora_types(domain: str | None = None) -> tuple[str, ...]:
    return tuple(n for n in LORA_TYPES if domain is None or FAMILIES[n].domain == domain)


def is_held_out(family: str, k: int) -> bool:
    """Four K values per LoRA family (a different four for each) are never trained on."""
    if FAMILIES[family].stage != "lora":
        return False
    return (k + LORA_TYPES.index(family)) % 6 == 0


def held_out_pairs(domain: str | None = None) -> list[tuple[str, int]]:
    return [(f, k) for f in lora_types(domain) for k in K_VALUES if is_held_out(f, k)]


def make_problem(family: str, k: int, c: int = 0, n_tests: int = 4) -> Problem:
    """One problem; its tests are a pure function of (family, k, c), so ids are stable."""
    if family not in FAMILIES:
        raise ValueError(f"unknown synthetic family {family!r}; known: {', '.join(FAMILIES)}")
    fam = FAMILIES[family]
    pid = f"synthetic/{family}-{k}" + (f"-{c}" if "{c}" in fam.statement else "")
    rng = random.Random(pid)
    inputs: list[str] = []
    for _ in range(50 * n_tests):  # distinct inputs when the family has enough of them
        stdin = fam.make_input(rng)
        if stdin not in inputs:
            inputs.append(stdin)
        if len(inputs) == n_tests:
            break
    tests = [TestCase(kind="stdio", input=s + "\n", output=fam.answer(s, k, c) + "\n") for s in inputs]
    return Problem(
        id=pid,
        source="synthetic",
        title=f"{family} K={k}",
        statement=fam.statement.format(k=k, c=c),
        tests=tests,
        solutions=[fam.code.format(k=k, c=c)],
        tags=[family],
        difficulty="easy",
        domains=[fam.domain],
        meta={"family": family, "k": k, "c": c, "stage": fam.stage, "held_out": is_held_out(family, k)},
    )


def pretrain_problems(n: int, seed: int = 0) -> list[Problem]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        family = rng.choice(PRETRAIN_TYPES)
        out.append(make_problem(family, rng.choice(PRETRAIN_K_VALUES), rng.randint(1, 9)))
    return out


def lora_problems(domain: str | None = "python", split: Literal["train", "heldout"] = "train") -> list[Problem]:
    """Every (type, K) problem of the domain's LoRA families on one side of the held-out split."""
    want_held = split == "heldout"
    return [make_problem(f, k) for f in lora_types(domain) for k in K_VALUES if is_held_out(f, k) == want_held]


def to_train_example(problem: Problem, index: int = 0) -> TrainExample:
    return TrainExample(
        id=f"{problem.id}#{index}",
        problem_id=problem.id,
        source=problem.source,
        statement=problem.statement,
        starter_code=problem.starter_code,
        code=problem.solutions[index],
        domains=list(problem.domains),
        difficulty=problem.difficulty,
        meta={"family": problem.meta.get("family"), "k": problem.meta.get("k")},
    )


def code_snippets(n: int, seed: int = 0) -> list[str]:
    """Generic programs that use every token the LoRA solutions need (list(map(int, ...)),
    sum/max/min/len, join, generator expressions, s * k, '!'), without statements.

    Without them, tokens the base never produced keep near-random embeddings that LoRA
    on the linear layers can't fix, and sampled outputs turn to garbage.
    """
    rng = random.Random(seed)
    ops = ["+", "-", "*", "//", "%"]
    cmps = [">", "<", ">=", "<=", "==", "!="]
    marks = ["'!'", "'?'", "'.'", "'-'", "'*'", "'#'"]
    list_reads = [_READ_LIST, "a = [int(x) for x in input().split()]\n"]
    int_reads = [_READ_N, _READ_AB]

    def num() -> int:
        return rng.randint(0, max(PRETRAIN_K_VALUES))

    def list_stmt() -> str:
        f = rng.choice(["sum", "max", "min", "len", "sorted"])
        return rng.choice([
            f"print({f}(a) {rng.choice(ops)} {num()})" if f != "sorted" else "print(sorted(a))",
            f"print(sum(x {rng.choice(cmps)} {num()} for x in a))",
            f"print(' '.join(str(x {rng.choice(ops)} {num()}) for x in a))",
            f"print(len([x for x in a if x {rng.choice(cmps)} {num()}]))",
            f"for x in a:\n    print(x {rng.choice(ops)} {num()})",
            f"print(max(a) {rng.choice(ops)} min(a))",
            f"b = [x {rng.choice(ops)} {num()} for x in a]\nprint(sum(b))",
        ])

    def str_stmt() -> str:
        return rng.choice([
            f"print(s * {num()})",
            f"print(s + {rng.choice(marks)} * {num()})",
            f"print({rng.choice(marks)} * {num()} + s)",
            f"print(len(s) {rng.choice(ops)} {num()})",
            "print(s.upper())",
            "print(s[::-1])",
            f"print(' '.join([s] * {num()}))",
            f"print(s + ' ' + s)",
            f"print(str(len(s)) + {rng.choice(marks)})",
        ])

    def int_stmt(read: str) -> str:
        v = "n" if read == _READ_N else rng.choice(["a", "b"])
        return rng.choice([
            f"print(abs({v} - {num()}) * {num()})",
            f"print(max({v}, {num()}) + {num()})",
            f"print(({v} + {num()}) % {max(num(), 2)})",
            f"print(sum(int(d) for d in str({v})) {rng.choice(ops)} {num()})",
            f"print({v} * ({v} + 1) // 2)",
            f"print(min({v}, {num()}) - {num()})",
            f"print(str({v}) * {num()})",
        ])

    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.45:
            body = rng.choice(list_reads) + "\n".join(list_stmt() for _ in range(rng.randint(1, 2)))
        elif kind < 0.75:
            body = _READ_WORD + "\n".join(str_stmt() for _ in range(rng.randint(1, 2)))
        else:
            read = rng.choice(int_reads)
            body = read + "\n".join(int_stmt(read) for _ in range(rng.randint(1, 2)))
        out.append("```python\n" + body + "\n```")
    return out


def _write_jsonl(path: Path, rows: Iterable) -> int:
    tmp = path.with_suffix(path.suffix + ".tmp")
    count = 0
    with tmp.open("w") as f:
        for row in rows:
            f.write(row.model_dump_json() + "\n")
            count += 1
    tmp.replace(path)
    return count


def write_dataset(out_dir: str | Path, domain: str = "python", train_limit: int | None = None,
                  eval_limit: int | None = None) -> Path:
    """A dataset directory in the cross-service format (train.jsonl, eval.jsonl,
    eval_problems.jsonl, manifest.json): LoRA train pairs / held-out pairs of `domain`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = lora_problems(domain, "train")
    held = lora_problems(domain, "heldout")
    if train_limit is not None:
        train = random.Random(0).sample(train, min(train_limit, len(train)))
    if eval_limit is not None:
        held = random.Random(1).sample(held, min(eval_limit, len(held)))
    n_train = _write_jsonl(out / "train.jsonl", (to_train_example(p) for p in train))
    n_eval = _write_jsonl(out / "eval.jsonl", (to_train_example(p) for p in held))
    _write_jsonl(out / "eval_problems.jsonl", held)
    manifest = {"source": "synthetic", "domain": domain, "train": n_train, "eval": n_eval,
                "eval_problems": len(held)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out
