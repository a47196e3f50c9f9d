import re

from lorafleet.shared import synthetic
from lorafleet.shared.sandbox import judge_many


def test_every_family_reference_passes_its_tests_in_the_sandbox():
    problems = [synthetic.make_problem(name, k, c=3) for name in synthetic.FAMILIES for k in (2, 13)]
    verdicts = judge_many([(p.solutions[0], p.tests) for p in problems])
    failing = [(p.id, j.verdict, j.detail) for p, j in zip(problems, verdicts) if j.verdict != "passed"]
    assert not failing
    assert all(len(p.tests) == 4 for p in problems)


def test_wrong_constant_fails():
    good = synthetic.make_problem("list_sum_add", 7)
    other = synthetic.make_problem("list_sum_add", 8)
    [verdict] = judge_many([(other.solutions[0], good.tests)])
    assert verdict.verdict == "wrong_answer"


def test_held_out_pairs_never_in_training_split():
    for domain in ("python", "math"):
        train = {(p.meta["family"], p.meta["k"]) for p in synthetic.lora_problems(domain, "train")}
        held = {(p.meta["family"], p.meta["k"]) for p in synthetic.lora_problems(domain, "heldout")}
        assert held and train and not (train & held)
        assert held == set(synthetic.held_out_pairs(domain))
        # every family is represented on both sides
        assert {f for f, _ in train} == {f for f, _ in held} == set(synthetic.lora_types(domain))


def test_pretraining_never_uses_lora_families():
    families = {p.meta["family"] for p in synthetic.pretrain_problems(300)}
    assert families <= set(synthetic.PRETRAIN_TYPES)
    assert not families & set(synthetic.LORA_TYPES)


def test_numbers_are_single_tokens_of_the_tiny_tokenizer(tiny_tokenizer):
    for name in synthetic.FAMILIES:
        p = synthetic.make_problem(name, 17, c=4)
        for text in (p.statement, p.solutions[0]):
            ids = tiny_tokenizer.encode(text, add_special_tokens=False)
            for match in re.finditer(r"\d+", text):
                assert text[match.start() - 1] == " ", (name, text)
                [token] = tiny_tokenizer.encode(" " + match.group(), add_special_tokens=False)
                assert token in ids, (name, text, match.group())


def test_problems_are_deterministic():
    assert synthetic.make_problem("word_bang", 5) == synthetic.make_problem("word_bang", 5)
    assert synthetic.pretrain_problems(20, seed=1) == synthetic.pretrain_problems(20, seed=1)


def test_snippets_cover_lora_solution_tokens():
    corpus = "\n".join(synthetic.code_snippets(2000))
    for needle in ["list(map(int, input().split()))", "sum(", "max(", "min(", "len(", "' '.join(",
                   "for x in a if x >", "'!' *", "s * ", "abs(", "str(n)", "% "]:
        assert needle in corpus, needle


def test_write_dataset(tmp_path):
    from lorafleet.shared.problems import Problem, TrainExample

    out = synthetic.write_dataset(tmp_path / "ds", "math", eval_limit=5)
    train = [TrainExample.model_validate_json(x) for x in (out / "train.jsonl").read_text().splitlines()]
    problems = [Problem.model_validate_json(x) for x in (out / "eval_problems.jsonl").read_text().splitlines()]
    assert len(problems) == 5 and len(train) == len(synthetic.lora_problems("math", "train"))
    assert not {e.problem_id for e in train} & {p.id for p in problems}
