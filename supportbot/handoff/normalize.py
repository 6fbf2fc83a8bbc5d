"""The one text form that messages and rule phrases are compared in.

NFKC, casefold, punctuation → space, accents on Latin/Greek/Cyrillic dropped (customers often
omit them), spaces between Chinese/Japanese characters dropped (those scripts have no spaces, and
customers put them anywhere), one space between CJK and any other script. Every other word is
then delimited by spaces, so compiled phrases need only cheap boundaries: big Unicode classes
inside each of hundreds of patterns would take seconds to compile.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["CJK_CHARS", "CJK_RE", "clause_breaks", "normalize"]

CJK_CHARS = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # a class body
CJK_RE = re.compile(f"[{CJK_CHARS}]")
_CJK_GAP = re.compile(f"(?<=[{CJK_CHARS}])\\s+(?=[{CJK_CHARS}])")
_CJK_EDGE = re.compile(
    f"(?<=[{CJK_CHARS}])(?=[^\\s{CJK_CHARS}])|(?<=[^\\s{CJK_CHARS}])(?=[{CJK_CHARS}])"
)
_SPACES = re.compile(r"\s+")
# Punctuation that ends a clause, and a letter no customer types that marks where it was.
_CLAUSE_END = re.compile(r"[,.;:!?¿¡…,。，！？；：、]+")
_MARK = "\u01c2"


def normalize(text: str) -> str:
    """The form both messages and patterns are compared in."""
    text = unicodedata.normalize("NFKC", text).casefold()
    out: list[str] = []
    prev_base = ""
    for ch in unicodedata.normalize("NFD", text):
        cat = unicodedata.category(ch)
        if cat == "Mn":
            # Drop accents on Latin/Greek/Cyrillic (users often omit them); keep e.g. kana dakuten.
            if prev_base and ord(prev_base) < 0x0530:
                continue
            out.append(ch)
            continue
        prev_base = ch
        # Punctuation, symbols and separators are word breaks ("don't" → "don t").
        out.append(" " if cat[0] in "PSZC" else ch)
    text = unicodedata.normalize("NFC", "".join(out))
    text = _SPACES.sub(" ", text).strip()
    return _CJK_EDGE.sub(" ", _CJK_GAP.sub("", text))


def clause_breaks(text: str, norm: str | None = None) -> frozenset[int]:
    """Where in ``normalize(text)`` (``norm``, if the caller has it) the customer ended a clause:
    the offsets of the spaces that were a comma, full stop, question mark... ("No, quiero
    hablar con un agente": the space after "no"). Empty when there is none, and for text whose
    spacing the marks would change (Chinese and Japanese, where normalising drops the spaces)."""
    if not _CLAUSE_END.search(text):
        return frozenset()
    breaks: list[int] = []
    words: list[str] = []
    length = -1  # the length of " ".join(words)
    for word in normalize(_CLAUSE_END.sub(f" {_MARK} ", text)).split(" "):
        if word == _MARK:
            breaks.append(length)
        elif word:
            words.append(word)
            length += len(word) + 1
    if " ".join(words) != (normalize(text) if norm is None else norm):
        return frozenset()
    return frozenset(b for b in breaks if 0 < b < length)
