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
import re
import zlib
from dataclasses import dataclass, field

import numpy as np
from datasketch import MinHashLSH

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9$\\{}]")  # words and symbols; TeX markup dropped
# One pass over the source: string literals kept verbatim, comments dropped, spaces inside
# a line dropped, a newline and the indentation after it kept (indentation is syntax).
# The one capturing group is what a match keeps: `split` returns the text between matches
# and that group (None when a comment or spaces matched), all in C; a replacement
# function or a group-reference template would run Python code per match.
_CODE_TOKEN = re.compile(
    r"""([rRbBuUfF]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')|\n[ \t]*)"""
    r"|\#[^\n]*|[ \t]+"
)


def solution_key(code: str) -> str:
    """Identical keys = the same program up to comments, blank lines and spacing within lines."""
    canon = "".join(filter(None, _CODE_TOKEN.split("\n" + code.replace("\r\n", "\n"))))
    canon = "\n".join(line for line in canon.split("\n") if line.strip())
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


_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))
_PERMUTATIONS: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_WORD_HASHES: dict[str, int] = {}  # statements share most of their vocabulary
_WORD_CACHE_MAX = 1 << 20


def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    if num_perm not in _PERMUTATIONS:
        gen = np.random.RandomState(1)
        a = gen.randint(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd multipliers
        b = gen.randint(0, 2**63, size=num_perm, dtype=np.uint64)
        _PERMUTATIONS[num_perm] = (a, b)
    return _PERMUTATIONS[num_perm]


@dataclass(frozen=True)
class Signature:
    """A statement's MinHash, its shingle hashes (for the exact Jaccard of LSH candidates)
    and its set of numbers."""

    hashvalues: np.ndarray  # uint64, each < 2**32
    shingles: np.ndarray  # sorted unique uint32
    numbers: frozenset[str]


def signature(statement: str, num_perm: int = 128) -> Signature:
    """MinHash with multiply-shift hashing, ((a*h + b) mod 2**64) >> 32 per permutation (a odd),
    computed in one numpy step per statement: datasketch's per-object update costs more
    than the rest of the pipeline, and a modulo by 2**61 - 1 is the slowest numpy step.
    Shingle hashes combine per-word crc32s. numpy's integer array arithmetic wraps
    modulo 2**64 without a warning; the shift is taken after the min (it is monotone)."""
    words = _WORD.findall(statement.lower())
    cache = _WORD_HASHES
    missing = set(words).difference(cache)
    if len(cache) + len(missing) > _WORD_CACHE_MAX:
        cache.clear()  # before adding: this statement's words must all stay in
    for w in missing:
        cache[w] = zlib.crc32(w.encode())
    h = np.fromiter(map(cache.__getitem__, words), dtype=np.uint64, count=len(words))
    if len(h) >= 3:
        s = h[:-2] * _MIX[0]
        s += h[1:-1] * _MIX[1]
        s += h[2:]
        s &= _MASK32
        h = s
    elif len(h) == 0:
        h = np.zeros(1, dtype=np.uint64)
    a, b = _permutations(num_perm)
    m = np.multiply.outer(h, a)
    m += b
    values = m.min(axis=0) >> _SHIFT32  # repeated shingles can't change a min
    return Signature(values, _sorted_unique(h.astype(np.uint32)), frozenset(filter(str.isdigit, words)))


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique of a short array at a third of its overhead."""
    x.sort()
    keep = np.empty(len(x), dtype=bool)
    keep[0] = True
    np.not_equal(x[1:], x[:-1], out=keep[1:])
    return x[keep]


def shingles(statement: str, n: int = 3) -> set[str]:
    words = _WORD.findall(statement.lower())
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def _jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@dataclass
class NearDuplicates:
    """Streaming near-duplicate index: `add` returns the keys of earlier statements this one
    duplicates. LSH finds candidates; each is confirmed by the exact Jaccard of the shingle
    sets (the MinHash estimate alone is off by ~0.04 at 128 permutations, enough to merge
    HumanEval's pairs_sum_to_zero and triples_sum_to_zero) and by the numbers rule."""

    threshold: float
    num_perm: int = 128
    number_agreement: float = 0.5
    _bands: list[dict[bytes, list[str]]] = field(init=False)
    _band_bytes: int = field(init=False)
    _sigs: dict[str, Signature] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        # datasketch's banding (its optimal b bands of r rows for the threshold), kept by hand:
        # MinHashLSH's per-band byteswap and storage calls cost as much as the signature.
        # Same b and r, same band equality -> the same candidates.
        params = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        self._bands = [{} for _ in range(params.b)]
        self._band_bytes = params.r * 4  # hash values are < 2**32: 4 bytes each

    def __len__(self) -> int:
        return len(self._sigs)

    def signature(self, statement: str) -> Signature:
        return signature(statement, self.num_perm)

    def _band_keys(self, sig: Signature) -> list[bytes]:
        raw, n = sig.hashvalues.astype(np.uint32).tobytes(), self._band_bytes
        return [raw[i * n:(i + 1) * n] for i in range(len(self._bands))]

    def _candidates(self, band_keys: list[bytes]) -> dict[str, None]:
        found: dict[str, None] = {}  # insertion-ordered set: deterministic order
        for table, band in zip(self._bands, band_keys):
            if (keys := table.get(band)) is not None:
                found.update(dict.fromkeys(keys))
        return found

    def matches(self, sig: Signature, band_keys: list[bytes] | None = None) -> list[str]:
        out = []
        for key in self._candidates(band_keys if band_keys is not None else self._band_keys(sig)):
            other = self._sigs[key]
            common = np.intersect1d(sig.shingles, other.shingles, assume_unique=True).size
            similarity = common / (sig.shingles.size + other.shingles.size - common)
            if similarity >= self.threshold and _jaccard(sig.numbers, other.numbers) >= self.number_agreement:
                out.append(key)
        return out

    def add(self, key: str, sig: Signature) -> list[str]:
        band_keys = self._band_keys(sig)
        found = self.matches(sig, band_keys)
        if key not in self._sigs:
            for table, band in zip(self._bands, band_keys):
                table.setdefault(band, []).append(key)
            self._sigs[key] = Signature(np.empty(0, np.uint64), sig.shingles, sig.numbers)  # the bands hold the rest
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
