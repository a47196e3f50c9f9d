from __future__ import annotations

from lorafleet.services.ingest.classify import adapters_for, classify, keyword_hits
from lorafleet.services.ingest.dedup import NearDuplicates, UnionFind, pick_diverse, signature, solution_key, unique_solutions
from lorafleet.services.ingest.split import after_cutoff, eval_ids, resolve_cutoff


# ------------------------------------------------------------------ classify

def test_whole_words_only():
    # "dp" inside "adpt", "graph" inside "paragraph", "heap" inside "cheap", "stack" inside "haystack"
    hits = keyword_hits("Read the paragraph and adpt it; a cheap haystack of primers.")
    assert hits["algorithms"] == [] and hits["data_structures"] == [] and hits["math"] == []
    assert keyword_hits("Use DP on the graph")["algorithms"] == ["dp", "graph"]


def test_phrases_match_across_spacing_and_hyphens():
    assert "dynamic programming" in keyword_hits("solve it with dynamic\nprogramming")["algorithms"]
    assert "priority queue" in keyword_hits("keep a priority-queue of events")["data_structures"]


def test_tags_and_keywords():
    assert classify("anything", ["number theory"]) == ["math"]
    assert classify("anything", ["Data structures", "greedy"]) == ["algorithms", "data_structures"]
    # two distinct keywords are needed without a tag; one stray word is not enough
    assert classify("Print the gcd of a and b modulo 7.", []) == ["math"]
    assert classify("Print the gcd.", []) == ["python"]
    assert classify("Reverse the string.", []) == ["python"]


def test_routing():
    assert adapters_for(["python"]) == ["python-lora"]
    assert adapters_for(["algorithms"]) == ["math-lora"]
    assert adapters_for(["data_structures", "math"]) == ["python-lora", "math-lora"]


# ------------------------------------------------------------------ dedup

def test_solution_key_ignores_comments_and_spacing_not_indentation():
    a = "x = 1  # one\n\n\nprint( x )\n"
    assert solution_key(a) == solution_key("x=1\nprint(x)")
    assert solution_key("if a:\n    x=1\ny=2") != solution_key("if a:\n    x=1\n    y=2")
    assert solution_key("print('#not a comment')") != solution_key("print('')")
    kept, removed = unique_solutions([a, "x=1\nprint(x)", "print(2)"])
    assert kept == [a, "print(2)"] and removed == 1
    assert solution_key("def f(:\n  (") == solution_key("def f(:\n  (")  # untokenisable code still gets a key


def test_near_duplicates_need_agreeing_numbers():
    nd = NearDuplicates(threshold=0.8)
    base = "You are given an array of n integers. Find the maximum sum of a contiguous subarray. 1 <= n <= 100000."
    assert nd.add("a", signature(base)) == []
    again = "You are given an array of n integers.  Find the maximum sum of a contiguous subarray. 1 <= n <= 100000!"
    assert nd.add("b", signature(again)) == ["a"]
    # same words, different constants: a different problem (parameterised families)
    assert nd.add("c", signature(base.replace("100000", "7"))) == []
    assert nd.add("d", signature("Completely different: print hello world to the output stream now.")) == []
    # symbols count: HumanEval/56 ("<" and ">") and /61 ("(" and ")") are different problems
    angle = ('brackets is a string of "<" and ">". return True if every opening bracket has a corresponding '
             'closing bracket. >>> correct_bracketing("<") False >>> correct_bracketing("<>") True')
    paren = angle.replace("<", "(").replace(">", ")")
    nd2 = NearDuplicates(0.8)
    nd2.add("56", signature(angle))
    assert nd2.add("61", signature(paren)) == []
    assert len(nd) == 4



def test_lsh_candidates_match_datasketch():
    # The banding is hand-written for speed; it must find exactly what MinHashLSH finds.
    import random

    from datasketch import LeanMinHash, MinHashLSH

    rng = random.Random(3)
    vocab = "array graph tree sum query print each line given find count pair order".split()
    statements = []
    for i in range(300):
        if statements and rng.random() < 0.3:  # near copies: a word or two changed
            words = rng.choice(statements).split()
            words[rng.randrange(len(words))] = rng.choice(vocab)
            statements.append(" ".join(words))
        else:
            statements.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 40))) + f" {i}")
    for threshold, num_perm in ((0.8, 128), (0.5, 64)):
        lsh, nd = MinHashLSH(threshold=threshold, num_perm=num_perm), NearDuplicates(threshold, num_perm)
        found = 0
        for i, text in enumerate(statements):
            sig = nd.signature(text)
            lean = LeanMinHash(seed=1, hashvalues=sig.hashvalues, scheme="legacy")
            expected = set(lsh.query(lean))
            assert set(nd._candidates(nd._band_keys(sig))) == expected
            found += len(expected)
            lsh.insert(str(i), lean)
            nd.add(str(i), sig)
        assert found > 20  # the near copies were candidates


def test_word_hash_cache_overflow_keeps_the_statement_words(monkeypatch):
    from lorafleet.services.ingest import dedup

    text = "alpha beta gamma delta epsilon zeta eta theta"
    expected = signature(text).hashvalues.tolist()
    # 8 words cached, room for 10: this statement's 8 new words overflow it
    monkeypatch.setattr(dedup, "_WORD_HASHES", {f"w{i}": i for i in range(8)})
    monkeypatch.setattr(dedup, "_WORD_CACHE_MAX", 10)
    assert signature(text).hashvalues.tolist() == expected

def test_union_find_keeps_earliest_root():
    uf = UnionFind()
    for i in range(5):
        uf.add(i)
    uf.union(3, 1)
    uf.union(4, 3)
    assert uf.groups() == {0: [0], 1: [1, 3, 4], 2: [2]}


def test_pick_diverse():
    sols = ["print(sum(map(int, input().split())))", "print(sum(map(int,input().split())) )",
            "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))", "a,b=input().split()\nprint(int(a)+int(b))"]
    picked = pick_diverse(sols, 2)
    assert len(picked) == 2 and picked == pick_diverse(list(reversed(sols)), 2)
    assert not (picked[0].startswith("print(sum(map") and picked[1].startswith("print(sum(map"))
    assert pick_diverse(sols[:1], 3) == sols[:1]


# ------------------------------------------------------------------ split

def test_split_is_seeded_order_independent_and_proportional():
    ids = [f"p{i}" for i in range(200)]
    e1 = eval_ids(ids, 0.1, seed=42)
    assert len(e1) == 20 and e1 == eval_ids(list(reversed(ids)), 0.1, seed=42)
    assert e1 != eval_ids(ids, 0.1, seed=7)
    assert len(eval_ids(["a", "b"], 0.1, 0)) == 1 and eval_ids(["a"], 0.1, 0) == set()


def test_cutoff():
    assert resolve_cutoff(None, ["2021-01-01", None, "2022-05-01"]) == "2022-05-01"
    assert resolve_cutoff("2023-01-01", ["2022-05-01"]) == "2023-01-01"
    assert resolve_cutoff(None, [None]) is None
    assert after_cutoff("2024-03-01", "2023-12-31") and not after_cutoff("2023-12-31", "2023-12-31")
    assert not after_cutoff(None, "2023-01-01") and after_cutoff(None, None)
