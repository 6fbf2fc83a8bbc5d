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
tables), and variants (colloquial words, misspelt product names, the usual paraphrases:
服务费 / 手续费) are mapped to one form, from ``zh_synonyms.yaml`` plus the staff's
``_synonyms.yaml`` in the knowledge directory (``Vocabulary``); the same file lists words the
segmenter must keep whole (花呗). Full-width forms are folded to half-width by NFKC in
``supportbot.knowledge.text``.

Which combination ranks best was measured on the shared afqmc set (tuned on its even-numbered
queries, reported on the odd ones: BENCHMARKS.md, "Retrieval quality").
"""

from __future__ import annotations

import hashlib
import json
import threading
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import yaml

# Very common Chinese function characters: useless as unigrams (they still form bigrams).
STOP_CHARS = frozenset("的了吗呢吧啊是我你他她它们在有和就都也还要会能可以这那个么什怎请问")

DEFAULT_VOCABULARY = Path(__file__).with_name("zh_synonyms.yaml")
STAFF_VOCABULARY = "_synonyms.yaml"  # in the knowledge directory (the loader skips "_" files)


class Vocabulary:
    """Words the segmenter keeps whole and variant -> canonical form, from YAML files that
    staff can edit (``zh_synonyms.yaml`` beside this module documents the format)."""

    def __init__(self, words: Iterable[str] = (), synonyms: dict[str, str] | None = None) -> None:
        self.words = tuple(dict.fromkeys(words))
        self.synonyms = dict(synonyms or {})
        # longest first, so "蚂蚁花呗" is replaced before a shorter variant inside it
        self.order = sorted(self.synonyms, key=len, reverse=True)
        text = json.dumps([self.words, sorted(self.synonyms.items())], ensure_ascii=False)
        self.digest = hashlib.sha256(text.encode()).hexdigest()[:16]  # for the index stamp

    @classmethod
    def read(cls, *paths: Path) -> Vocabulary:
        """The files merged in order: a later file's canonical form replaces an earlier one's
        variants, its words are added. Missing files are skipped; a broken one raises."""
        words: list[str] = []
        canon: dict[str, list[str]] = {}
        for path in paths:
            if not path.is_file():
                continue
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a mapping with 'words' and 'synonyms'")
            listed = data.get("words") or []
            if not isinstance(listed, list):
                raise ValueError(f"{path}: 'words' must be a list")
            words += [_norm(w) for w in listed]
            mapping = data.get("synonyms") or {}
            if not isinstance(mapping, dict):
                raise ValueError(f"{path}: 'synonyms' must map a form to a list of variants")
            for form, variants in mapping.items():
                if not isinstance(variants, list):
                    raise ValueError(f"{path}: synonyms of {form!r} must be a list")
                canon[_norm(form)] = [_norm(v) for v in variants]
        synonyms = {v: form for form, vs in canon.items() for v in vs if v and v != form}
        return cls([w for w in words if w], synonyms)


def _norm(text: object) -> str:
    """What the index sees of a word: NFKC, lower case, simplified characters."""
    return to_simplified(unicodedata.normalize("NFKC", str(text)).lower().strip())


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


_added_words: set[str] = set()


@lru_cache(maxsize=1)
def _segmenter():
    """jieba's dictionary, loaded once on first use (about half a second)."""
    with _lock:
        import rjieba

        return rjieba


def _add_words(words: Iterable[str]) -> None:
    """Teach the segmenter the vocabulary's words (jieba's dictionary is per process and
    words cannot be taken out again: a word dropped from the file stays known until restart,
    which only ever keeps a word whole)."""
    new = [w for w in words if w not in _added_words and len(w) > 1]
    if not new:
        return
    seg = _segmenter()
    with _lock:
        for w in new:
            seg.add_word(w, None, None)
            _added_words.add(w)


@lru_cache(maxsize=1)
def _converter():
    from zhconv_rs import zhconv

    return zhconv


def to_simplified(text: str) -> str:
    """Traditional -> simplified characters; the text unchanged when it has no Han character."""
    if not any(is_han(ch) for ch in text):
        return text
    return _converter()(text, "zh-hans")


_vocabulary: Vocabulary | None = None


def vocabulary() -> Vocabulary:
    """The vocabulary in use: the shipped file until ``use_vocabulary`` says otherwise."""
    global _vocabulary
    if _vocabulary is None:
        _vocabulary = Vocabulary.read(DEFAULT_VOCABULARY)
    return _vocabulary


def use_vocabulary(knowledge_dir: Path | None) -> Vocabulary:
    """Use the shipped vocabulary plus the knowledge directory's ``_synonyms.yaml``; returns
    it (its ``digest`` goes into the index stamp, so editing the file re-indexes the FAQ).
    A broken staff file is reported by raising ``ValueError`` and the shipped one is used."""
    global _vocabulary
    paths = [DEFAULT_VOCABULARY]
    if knowledge_dir is not None:
        paths.append(Path(knowledge_dir) / STAFF_VOCABULARY)
    try:
        _vocabulary = Vocabulary.read(*paths)
    except (OSError, ValueError, yaml.YAMLError):
        _vocabulary = Vocabulary.read(DEFAULT_VOCABULARY)
        raise
    return _vocabulary


def apply_synonyms(run: str) -> str:
    vocab = vocabulary()
    for word in vocab.order:
        if word in run:
            run = run.replace(word, vocab.synonyms[word])
    return run


def words(run: str) -> list[str]:
    """jieba's words of one run of Han characters."""
    _add_words(vocabulary().words)
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
