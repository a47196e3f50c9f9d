"""Duplicates: exact duplicate solutions (after dropping comments and blank lines,
whitespace inside lines ignored, indentation kept) and near-duplicate problems
(MinHash LSH over word 3-grams of the statement).

Two statements that differ only in their numbers ("print n times 7" / "times 8")
are different problems: a near-duplicate also needs the statements' sets of
numbers to mostly agree. Formatting changes between sources ("$1 \\le n$" vs
"1 ≤ n") keep the numbers.
"""

from __future__ import annotations

import hashlib
import io
import re
import tokenize
import zlib
from dataclasses import dataclass, field

import numpy as np
from datasketch import MinHash, MinHashLSH

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9$\\{}]")  # words and symbols; TeX markup dropped
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SKIP_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}


def solution_key(code: str) -> str:
    """Identical keys = the same program up to comments, blank lines and spacing."""
    try:
        parts = [
            tok.string if tok.type not in (tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE) else f"\x00{tok.type}"
            for tok in tokenize.generate_tokens(io.StringIO(code).readline)
            if tok.type not in _SKIP_TOKENS
        ]
        canon = "\x01".join(parts)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        lines = (ln.rstrip() for ln in code.splitlines())
        canon = "\n".join(ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#"))
    return hashlib.sha1(canon.encode("utf-8", "surrogatepass")).hexdigest()


def unique_solutions(solutions: list[str]) -> tuple[list[str], int]:
    """First occurrence of each solution key; returns (kept, number removed)."""
    seen: set[str] = set()
    kept = []
    for code in solutions:
        key = solution_key(code)
        if key not in seen:
            seen.add(key)
            kept.append(code)
    return kept, len(solutions) - len(kept)


def shingles(statement: str, n: int = 3) -> set[bytes]:
    words = _WORD.findall(statement.lower())
    if len(words) < n:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


def numbers(statement: str) -> frozenset[str]:
    return frozenset(_NUMBER.findall(statement))


def _crc32(data: bytes) -> int:
    return zlib.crc32(data)


def minhash(statement: str, num_perm: int) -> MinHash:
    m = MinHash(num_perm=num_perm, hashfunc=_crc32)
    m.update_batch(list(shingles(statement)))
    return m


def _jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@dataclass
class NearDuplicates:
    """Streaming near-duplicate index: `add` returns the keys of earlier statements this one
    duplicates (LSH candidates confirmed by the MinHash estimate and the numbers rule)."""

    threshold: float
    num_perm: int = 128
    number_agreement: float = 0.5
    _lsh: MinHashLSH = field(init=False)
    _sigs: dict[str, np.ndarray] = field(default_factory=dict, init=False)
    _nums: dict[str, frozenset] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)

    def __len__(self) -> int:
        return len(self._sigs)

    def matches(self, statement: str, m: MinHash | None = None) -> list[str]:
        m = m or minhash(statement, self.num_perm)
        nums = numbers(statement)
        sig = m.hashvalues.astype(np.uint32)
        out = []
        for key in self._lsh.query(m):
            similarity = float(np.count_nonzero(self._sigs[key] == sig)) / self.num_perm
            if similarity >= self.threshold and _jaccard(nums, self._nums[key]) >= self.number_agreement:
                out.append(key)
        return out

    def add(self, key: str, statement: str) -> list[str]:
        m = minhash(statement, self.num_perm)
        found = self.matches(statement, m)
        if key not in self._sigs:
            self._lsh.insert(key, m)
            # crc32 hashes keep every permuted value below 2**32: uint32 halves the memory.
            self._sigs[key] = m.hashvalues.astype(np.uint32)
            self._nums[key] = numbers(statement)
        return found


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def add(self, x: int) -> None:
        self.parent.setdefault(x, x)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # the earlier problem stays the root: the first source listed wins ties
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for x in self.parent:
            out.setdefault(self.find(x), []).append(x)
        return out


def _token_set(code: str) -> frozenset[str]:
    return frozenset(re.findall(r"[A-Za-z_]\w*|\S", code))


def pick_diverse(solutions: list[str], k: int, pool: int = 64) -> list[str]:
    """Up to k solutions, greedily the one least like those already chosen (token Jaccard);
    the first (shortest) solution starts. Deterministic."""
    if len(solutions) <= k:
        return list(solutions)
    candidates = sorted(solutions[:pool] if len(solutions) > pool else solutions, key=lambda s: (len(s), s))
    tokens = [_token_set(s) for s in candidates]
    chosen = [0]
    while len(chosen) < k:
        best, best_score = None, -1.0
        for i in range(len(candidates)):
            if i in chosen:
                continue
            score = min(1.0 - _jaccard(tokens[i], tokens[j]) for j in chosen)
            if score > best_score:
                best, best_score = i, score
        chosen.append(best)  # type: ignore[arg-type]
    return [candidates[i] for i in chosen]
