"""Chinese text for the lexical index: script normalisation, word segmentation, n-grams.

Customers write the same question in traditional or simplified characters (花唄 / 花呗), with
full-width or half-width digits and letters, with colloquial words (咋 for 怎么) and with word
boundaries that differ from the FAQ's. Each run of Han characters therefore becomes:

- its words, from jieba's dictionary segmentation (``rjieba``, the Rust port of jieba, loaded on
  the first Chinese text so that an English-only bot never pays for its dictionary);
- its overlapping character bigrams, which keep matching when the query splits a word
  differently or uses a word the dictionary does not know (花呗 is not in it: 花 / 呗);
- its single characters, minus the most common function characters.

Traditional characters are mapped to simplified ones (``zhconv-rs``, MediaWiki's conversion
tables), and a short list of colloquial variants is mapped to the word the FAQ most likely uses
(``SYNONYMS``). Full-width forms are folded to half-width by NFKC in ``supportbot.knowledge.text``.

Which combination ranks best was measured on the shared afqmc set (tuned on its even-numbered
queries, reported on the odd ones: BENCHMARKS.md, "Retrieval quality").
"""

from __future__ import annotations

import threading
from functools import lru_cache

# Very common Chinese function characters: useless as unigrams (they still form bigrams).
STOP_CHARS = frozenset("的了吗呢吧啊是我你他她它们在有和就都也还要会能可以这那个么什怎请问")

# Colloquial or regional variants -> the form FAQs are usually written in. Applied to queries
# and FAQ text alike (after the traditional -> simplified mapping), longest first.
SYNONYMS: dict[str, str] = {
    "为啥": "为什么",
    "咋样": "怎么样",
    "咋办": "怎么办",
    "咋": "怎么",
    "怎样": "怎么",
    "如何": "怎么",
    "怎么样才能": "怎么",
    "啥": "什么",
    "么么": "么",
    "能不能": "能否",
    "可不可以": "能否",
    "是不是": "是否",
    "有没有": "是否有",
    "还钱": "还款",
    "登陆": "登录",
    "帐户": "账户",
    "帐号": "账号",
}
_SYN_ORDER = sorted(SYNONYMS, key=len, reverse=True)


def is_han(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF  # CJK unified ideographs
        or 0x3400 <= cp <= 0x4DBF  # extension A
        or 0x20000 <= cp <= 0x2FA1F  # extensions B-F, compatibility supplement
        or 0xF900 <= cp <= 0xFAFF  # compatibility ideographs
    )


def is_cjk(ch: str) -> bool:
    """Han, kana or Hangul: scripts written without spaces between words."""
    cp = ord(ch)
    return is_han(ch) or 0x3040 <= cp <= 0x30FF or 0xAC00 <= cp <= 0xD7AF


_lock = threading.Lock()


@lru_cache(maxsize=1)
def _segmenter():
    """jieba's dictionary, loaded once on first use (about half a second)."""
    with _lock:
        import rjieba

        return rjieba


@lru_cache(maxsize=1)
def _converter():
    from zhconv_rs import zhconv

    return zhconv


def to_simplified(text: str) -> str:
    """Traditional -> simplified characters; the text unchanged when it has no Han character."""
    if not any(is_han(ch) for ch in text):
        return text
    return _converter()(text, "zh-hans")


def apply_synonyms(run: str) -> str:
    for word in _SYN_ORDER:
        if word in run:
            run = run.replace(word, SYNONYMS[word])
    return run


def words(run: str) -> list[str]:
    """jieba's words of one run of Han characters."""
    return _segmenter().cut(run)


def run_terms(run: str) -> list[str]:
    """Index terms of one run of CJK characters (already simplified and lower-cased)."""
    run = apply_synonyms(run)
    out = [ch for ch in run if ch not in STOP_CHARS]
    out.extend(run[i : i + 2] for i in range(len(run) - 1))
    if len(run) > 2 and all(is_han(ch) for ch in run):
        # a two-character word is also a bigram: counted twice, real words outweigh the
        # bigrams that straddle a word boundary
        out.extend(w for w in words(run) if len(w) > 1)
    return out
