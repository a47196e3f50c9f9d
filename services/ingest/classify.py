"""Domain classification from tags and statement keywords, whole words and phrases only
("dp" must not match "adpt"; "graph" must not match "paragraph").

Routing (the original spec): python-lora takes python + data_structures problems,
math-lora takes math + algorithms problems.
"""

from __future__ import annotations

import re

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


def _pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    # A phrase matches with any whitespace/hyphen between its words, never inside a word.
    alts = sorted((r"[\s\-]+".join(map(re.escape, re.split(r"[\s\-]+", p))) for p in phrases), key=len, reverse=True)
    return re.compile(r"(?<![\w])(?:" + "|".join(alts) + r")(?![\w])", re.IGNORECASE)


_KEYWORD_RE = {domain: _pattern(words) for domain, words in KEYWORDS.items()}
_TAG_SETS = {domain: frozenset(tags) for domain, tags in TAGS.items()}


def keyword_hits(statement: str) -> dict[str, list[str]]:
    """Which whole-word keywords of each domain the statement contains (for explaining a label)."""
    def canon(hit: str) -> str:
        return " ".join(re.split(r"[\s\-]+", hit.lower()))

    return {d: sorted({canon(m.group(0)) for m in rx.finditer(statement)}) for d, rx in _KEYWORD_RE.items()}


def classify(statement: str, tags: list[str], min_keyword_hits: int = 2) -> list[str]:
    """Domains of a problem: any matching tag counts; keywords need `min_keyword_hits`
    distinct matches (one stray word is weak evidence). No signal at all = python."""
    lowered = {t.strip().lower() for t in tags}
    found = [d for d in DOMAINS if lowered & _TAG_SETS[d]]
    hits = keyword_hits(statement)
    found += [d for d in DOMAINS if d not in found and len(hits[d]) >= min_keyword_hits]
    return [d for d in DOMAINS if d in found] or ["python"]


def classify_problem(problem: Problem) -> Problem:
    """Keep the domains a source already set (synthetic, the project's own JSONL); else classify."""
    if problem.domains:
        return problem
    return problem.model_copy(update={"domains": classify(problem.statement, problem.tags)})


def adapters_for(domains: list[str]) -> list[str]:
    return [name for name, wanted in ROUTES.items() if set(domains) & set(wanted)]
