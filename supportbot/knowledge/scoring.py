"""Calibrated confidence for FAQ hits.

BM25 scores are unbounded and not comparable across queries, so they rank but cannot be
thresholded. The confidence the engine compares with ``Settings.faq_confidence`` is instead::

    lexical = sum(w(t) * m(t, entry) for t in Q) / sum(w(t) for t in Q)

over the distinct query terms Q (after stop words and stemming), where ``w(t)`` is the term's
BM25 idf in the FAQ corpus and ``m`` is 1 when the term occurs in the entry's question,
alternative phrasings or tags, ``ANSWER_CREDIT`` when it occurs only in the answer, else 0.
It is the share of the query's information that the entry covers: a question the entry asks
(in any phrasing) scores near 1; "what's the weather on Mars" scores ~0 because its rare
terms (never seen in the FAQ, hence maximal idf) are unmatched. Chinese character unigrams
weigh ``CJK_UNIGRAM_WEIGHT`` of their idf (bigrams carry the meaning), and Chinese bigrams
absent from the corpus are ignored: most of them straddle a word boundary ("款需" in
"退款需要") and say nothing about relevance.

With embeddings, the entry's dense cosine is ``(max over its phrasings + DOC_WEIGHT * whole
entry) / (1 + DOC_WEIGHT)`` (see ``supportbot.knowledge.vectors``), the dense confidence maps it
linearly from the model's "unrelated" cosine to its "paraphrase" cosine
(``Embedder.cosine_range``) onto [0, 1], and the match score is
``DENSE_WEIGHT * dense + (1 - DENSE_WEIGHT) * lexical``.

Ranking uses the same blend without the clipping, plus a share of BM25 relative to the best
candidate; the confidence a hit reports is its match score minus ``AMBIGUITY_PENALTY`` times the
best other candidate's (``margin``): two entries that fit equally well are no confident answer.

Names are the exception to "share of the information": the domain words of the Chinese
vocabulary (its ``words``: product names like 花呗 / 借呗, key terms like 手续费) are so common
in a product's FAQ that their idf is small, so an entry about 借呗 covers "花呗能二次分期吗"
at 0.99 and won by a wide margin. A hit that lacks a name the question uses has no confidence
(``names_match``): on afqmc's tuning half every answer-alone that this removed was about the
wrong product (BENCHMARKS.md, "Answering from the FAQ alone").

Likewise, in lexical search, an entry whose every phrasing has more than ``SPECIFIC_RATIO``
times the question's distinct terms asks something more specific than the question, however
well it covers it ("花呗怎么买飞机票" and a 60-character story about refunding a plane ticket
bought with 花呗): no confidence either (``asks_more``).

The weights were chosen on the even-numbered queries of the shared stackfaq and afqmc sets and
are reported on the odd-numbered ones (``bench/retrieval_quality.py``; figures in BENCHMARKS.md,
"Retrieval quality"). Reciprocal-rank and z-score fusions were tried before and did worse: the
lexical coverage is much weaker than the dense cosine on paraphrases, so fusions that weigh the
two lists equally lose.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

ANSWER_CREDIT = 0.4
CJK_UNIGRAM_WEIGHT = 0.3
DENSE_FLOOR = 0.15
DENSE_CEIL = 0.65
DENSE_WEIGHT = 0.8
DOC_WEIGHT = 0.25


def idf(df: int, n: int) -> float:
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def _is_cjk_term(term: str) -> bool:
    return not term.isascii() and ord(term[0]) >= 0x2E80


def term_weights(query_terms: list[str], dfs: dict[str, int], n: int) -> dict[str, float]:
    weights: dict[str, float] = {}
    for t in dict.fromkeys(query_terms):
        df = dfs.get(t, 0)
        w = idf(df, max(n, 1))
        if _is_cjk_term(t):
            if len(t) == 1:
                w *= CJK_UNIGRAM_WEIGHT
            elif df == 0:
                w = 0.0
        weights[t] = w
    return weights


def lexical_confidence(weights: dict[str, float]) -> Callable[[Mapping[str, int]], float]:
    """The query's lexical confidence as a function of an entry's terms (``Lexicon.docs``: > 0
    when in its question, alternative phrasings or tags, < 0 when only in its answer); the
    query's side is worked out once for all its candidates."""
    total = sum(weights.values())
    if total <= 0:
        return lambda doc: 0.0
    credits = [(t, w, w * ANSWER_CREDIT) for t, w in weights.items()]

    def confidence(doc: Mapping[str, int]) -> float:
        got = 0.0
        for t, w, answer_only in credits:
            v = doc.get(t)
            if v is not None:
                got += w if v > 0 else answer_only
        return min(1.0, got / total)

    return confidence


def dense_confidence(cosine: float, floor: float = DENSE_FLOOR, ceil: float = DENSE_CEIL) -> float:
    """The cosine mapped from the model's "unrelated" level (``floor``) to its "paraphrase"
    level (``ceil``) onto [0, 1]; each model family has its own (``Embedder.cosine_range``)."""
    return min(1.0, max(0.0, (cosine - floor) / (ceil - floor)))


def hybrid_score(lexical: float, dense: float) -> float:
    return DENSE_WEIGHT * dense + (1.0 - DENSE_WEIGHT) * lexical


# Lexical search ranks by BM25 alone: blending in the coverage (0.5 before) did no better on
# stackfaq's tuning half and worse on afqmc's and the Chinese paraphrases (BENCHMARKS.md).
BM25_RANK_WEIGHT = 1.0
# In hybrid ranking the lexical part keeps the blend it was tuned with.
HYBRID_BM25_RANK_WEIGHT = 0.5


def lexical_rank(lexical: float, bm25_relative: float, weight: float | None = None) -> float:
    """Order lexical hits: BM25 relative to the best hit, optionally blended with the
    calibrated coverage (``weight`` is BM25's share)."""
    w = BM25_RANK_WEIGHT if weight is None else weight
    return w * bm25_relative + (1.0 - w) * lexical


def hybrid_rank(
    lexical: float,
    cosine: float,
    bm25_relative: float = 0.0,
    floor: float = DENSE_FLOOR,
    ceil: float = DENSE_CEIL,
) -> float:
    """Like hybrid_score without the clipping, so near-duplicates still rank by cosine."""
    lex = lexical_rank(lexical, bm25_relative, HYBRID_BM25_RANK_WEIGHT)
    return DENSE_WEIGHT * (cosine - floor) / (ceil - floor) + (1.0 - DENSE_WEIGHT) * lex


AMBIGUITY_PENALTY = 1.0  # lexical: the coverage alone separates right from wrong poorly
AMBIGUITY_PENALTY_HYBRID = 0.6  # with embeddings the match score is better calibrated


def margin(score: float, rival: float, hybrid: bool = False) -> float:
    """A hit's confidence: its match score minus ``AMBIGUITY_PENALTY`` times the best other
    candidate's. Two entries that match a question equally well (near-duplicate FAQ entries,
    or a vague question) are not a confident answer, whichever ranks first; this is what keeps
    answers from the FAQ alone right (BENCHMARKS.md, "Retrieval quality")."""
    penalty = AMBIGUITY_PENALTY_HYBRID if hybrid else AMBIGUITY_PENALTY
    return max(0.0, score - penalty * rival)


def names_match(named: list[str], doc: Mapping[str, int]) -> bool:
    """Whether an entry's terms (``LexicalIndex.docs``: question side or answer) hold every
    name of the question (``named``: its terms that are vocabulary words). An entry about
    another product than the one asked about is no confident answer however much of the
    question it covers."""
    return all(t in doc for t in named)


# chosen on the tuning halves: at looser operating points (penalty 0.8 or 0.6, threshold 0.4)
# the answers-alone above 3x were two wrong ones (4.0x stackfaq, 3.7x afqmc at 0.6), while a
# right one was at 3.0x
SPECIFIC_RATIO = 3.5


def asks_more(phrasing_sizes: Iterable[int], query_size: int) -> bool:
    """Whether an entry asks something more specific than the question: even its shortest
    phrasing (question or alternative) has more than ``SPECIFIC_RATIO`` times the question's
    distinct terms. Such an entry can cover the whole question and still be about another
    matter, so it is no confident answer (lexical search; embeddings see the difference)."""
    return min(phrasing_sizes, default=0) > SPECIFIC_RATIO * max(query_size, 1)
