"""Domain classification from tags and statement keywords, whole words and phrases only
("dp" must not match "adpt"; "graph" must not match "paragraph").

Routing (the original spec): python-lora takes python + data_structures problems,
math-lora takes math + algorithms problems.
"""

from __future__ import annotations

import re
from collections import Counter

from lorafleet.shared.problems import Problem

# Tags as the sources spell them (CodeContests cf_tags, TACO tags/skill_types), lower-cased.
TAGS: dict[str, tuple[str, ...]] = {
    "math": ("math", "mathematics", "number theory", "combinatorics", "geometry", "probabilities",
             "matrices", "fft", "chinese remainder theorem", "counting"),
    "algorithms": ("dp", "dynamic programming", "greedy", "greedy algorithms", "graphs", "graph", "dfs and similar",
                   "shortest paths", "binary search", "sortings", "sorting", "two pointers", "divide and conquer",
                   "brute force", "constructive algorithms", "bitmasks", "bit manipulation", "games",
                   "graph matchings", "flows", "2-sat", "complete search", "range queries", "breadth-first search",
                   "depth-first search", "amortized analysis", "meet-in-the-middle", "backtracking"),
    "data_structures": ("data structures", "dsu", "trees", "tree", "hashing", "stack", "queue", "heap",
                        "priority queue", "segment tree", "fenwick tree", "linked list", "spanning trees",
                        "tries", "hash table", "sets", "map"),
    "python": ("implementation", "strings", "string", "expression parsing", "string manipulation",
               "sorting algorithms", "simulation"),
}

KEYWORDS: dict[str, tuple[str, ...]] = {
    "math": ("prime", "primes", "prime number", "modulo", "gcd", "lcm", "greatest common divisor",
             "least common multiple", "divisor", "divisors", "factorial", "probability", "expected value",
             "binomial", "combinatorics", "integer sequence", "fibonacci", "arithmetic progression",
             "geometric progression", "polynomial", "matrix", "determinant", "digits sum", "sum of digits",
             "perfect square", "square root", "remainder", "parity", "coprime", "number theory", "geometry",
             "triangle", "circle", "angle", "area", "equation"),
    "algorithms": ("dynamic programming", "dp", "greedy", "graph", "graphs", "shortest path", "shortest paths",
                   "dijkstra", "breadth first search", "bfs", "dfs", "depth first search", "binary search",
                   "two pointers", "sliding window", "backtracking", "recursion", "memoization",
                   "topological sort", "minimum spanning tree", "knapsack", "longest common subsequence",
                   "longest increasing subsequence", "divide and conquer", "bitmask", "sort the array",
                   "edit distance", "permutations"),
    "data_structures": ("stack", "queue", "deque", "heap", "priority queue", "linked list", "binary tree",
                        "binary search tree", "segment tree", "fenwick tree", "binary indexed tree", "trie",
                        "hash map", "hash table", "hashmap", "dictionary", "union find", "disjoint set",
                        "disjoint set union", "tree node", "treenode", "listnode", "adjacency list"),
    "python": ("python", "string", "strings", "list comprehension", "list", "lists", "substring",
               "palindrome", "characters", "uppercase", "lowercase", "vowels", "words", "sentence"),
}

ROUTES: dict[str, tuple[str, ...]] = {
    "python-lora": ("python", "data_structures"),
    "math-lora": ("math", "algorithms"),
}
DOMAINS = ("python", "math", "algorithms", "data_structures")


_WORD = re.compile(r"[a-z0-9]+")


def _words(phrase: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(phrase.lower()))


# first word -> [(number of words, domain, canonical spelling)]
_BY_FIRST: dict[str, list[tuple[int, str, str]]] = {}
for _domain, _phrases in KEYWORDS.items():
    for _p in _phrases:
        _w = _words(_p)
        _BY_FIRST.setdefault(_w[0], []).append((len(_w), _domain, " ".join(_w)))
_FIRST_WORDS = frozenset(_BY_FIRST)
_TAG_SETS = {domain: frozenset(tags) for domain, tags in TAGS.items()}


def keyword_hits(statement: str) -> dict[str, list[str]]:
    """Which keywords of each domain the statement contains, as whole words: the statement
    is split into words and a phrase must match a run of whole words, so "dp" never
    matches inside "adpt" and spacing, line breaks or hyphens between words don't matter."""
    hits: dict[str, set[str]] = {d: set() for d in KEYWORDS}
    for domain, canon in _matches(statement):
        hits[domain].add(canon)
    return {d: sorted(v) for d, v in hits.items()}


def _matches(statement: str) -> set[tuple[str, str]]:
    """(domain, keyword) pairs found in the statement."""
    words = _WORD.findall(statement.lower())
    present = _FIRST_WORDS.intersection(words)
    if not present:
        return set()
    joined = f" {' '.join(words)} "
    return {(domain, canon) for w in present for n, domain, canon in _BY_FIRST[w] if n == 1 or f" {canon} " in joined}


def classify(statement: str, tags: list[str], min_keyword_hits: int = 2) -> list[str]:
    """Domains of a problem: any matching tag counts; keywords need `min_keyword_hits`
    distinct matches (one stray word is weak evidence). No signal at all = python."""
    lowered = {t.strip().lower() for t in tags}
    found = {d for d in DOMAINS if lowered & _TAG_SETS[d]}
    per_domain = Counter(domain for domain, _ in _matches(statement))
    found.update(d for d, n in per_domain.items() if n >= min_keyword_hits)
    return [d for d in DOMAINS if d in found] or ["python"]


def classify_problem(problem: Problem) -> Problem:
    """Keep the domains a source already set (synthetic, the project's own JSONL); else classify."""
    if problem.domains:
        return problem
    return problem.model_copy(update={"domains": classify(problem.statement, problem.tags)})


def adapters_for(domains: list[str]) -> list[str]:
    return [name for name, wanted in ROUTES.items() if set(domains) & set(wanted)]
