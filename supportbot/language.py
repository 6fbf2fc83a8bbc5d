"""Cheap, offline language guess for one customer message.

Script first (Han, kana, Hangul, Cyrillic, ...), then a small stop-word vote for Latin-script
text. The platform's hint (Telegram ``language_code``) decides when the text alone cannot:
empty, too short, or a tie. No model, no dependency: we only need to pick the reply language
and the phrase list, and a wrong guess on a two-word message costs little.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["detect_language", "normalize_hint"]

_HINT_ALIASES = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "nb": "no", "nn": "no"}
_CYRILLIC_LANGS = {"ru", "uk", "bg", "sr", "mk", "be", "kk", "ky", "mn", "tg"}


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Short, frequent, fairly distinctive words. Shared words ("de", "la") count for each language.
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": _words(
        "the a an is are was i you my your me to and of it in on for with can could please "
        "how what why when do does did not no have has this that need want help hello hi hey "
        "thanks thank would like talk speak person someone there be will just get"
    ),
    "es": _words(
        "el la los las de del que y en un una por con para es no mi me quiero hablar como "
        "cómo qué hola gracias necesito ayuda puedo persona está estoy pero muy favor se lo "
        "al su tengo hay usted buenos buenas dónde cuándo"
    ),
    "fr": _words(
        "le la les de des du un une et est je tu vous nous pas ne pour avec mon ma mes que "
        "qui bonjour merci parler veux voudrais suis c j l d qu n personne aide aider comment "
        "au aux ce cette sur dans il elle on mais oui"
    ),
    "de": _words(
        "der die das und ist ich nicht mit ein eine einen zu mein meine sie wir bitte danke "
        "hallo möchte sprechen kann können wie was auf für den dem habe mitarbeiter mensch "
        "menschen ja nein auch noch mir mich bin es im"
    ),
    "pt": _words(
        "o a os as de do da que e em um uma para com não meu minha eu você falar quero olá "
        "obrigado obrigada ajuda preciso pessoa atendente por favor como está é no na uma "
        "isso pode sim oi"
    ),
    "it": _words(
        "il lo la gli le di che e è un una per con non mio mia io voglio parlare ciao grazie "
        "aiuto sono come persona posso vorrei della"
    ),
    "nl": _words(
        "de het een en is ik niet met van dat wil spreken hallo bedankt alsjeblieft mijn je u "
        "kan graag dank wat hoe"
    ),
}
_LATIN_ORDER = ("en", "es", "pt", "fr", "de", "it", "nl")
_DIACRITICS: dict[str, str] = {
    "ñ": "es", "¿": "es", "¡": "es",
    "ã": "pt", "õ": "pt",
    "ß": "de", "ä": "de", "ö": "de", "ü": "de",
    "è": "fr", "ê": "fr", "ë": "fr", "î": "fr", "ô": "fr", "û": "fr", "œ": "fr", "ù": "fr",
    "ò": "it", "ì": "it",
}  # fmt: skip
_WORD = re.compile(r"[^\W\d_]+")
_ASCII_LETTER = re.compile(r"[a-z]")


def normalize_hint(hint: str | None) -> str | None:
    """``"zh-hans"`` → ``"zh"``, ``"pt_BR"`` → ``"pt"``; ``None``/junk → ``None``."""
    if not hint:
        return None
    code = re.split(r"[-_]", hint.strip().lower(), maxsplit=1)[0]
    if not re.fullmatch(r"[a-z]{2,3}", code):
        return None
    return _HINT_ALIASES.get(code, code)


def _script(ch: str) -> str | None:
    cp = ord(ch)
    if 0x3040 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF or 0xFF66 <= cp <= 0xFF9F:
        return "kana"
    if 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF:
        return "han"
    if 0x20000 <= cp <= 0x2FFFF:
        return "han"
    if 0xAC00 <= cp <= 0xD7AF or 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F:
        return "ko"
    if not ch.isalpha():
        return None
    if 0x0400 <= cp <= 0x04FF:
        return "cyr"
    if 0x0370 <= cp <= 0x03FF:
        return "el"
    if 0x0590 <= cp <= 0x05FF:
        return "he"
    if 0x0600 <= cp <= 0x06FF or 0x0750 <= cp <= 0x077F:
        return "ar"
    if 0x0900 <= cp <= 0x097F:
        return "hi"
    if 0x0E00 <= cp <= 0x0E7F:
        return "th"
    if cp < 0x0250 or 0x1E00 <= cp <= 0x1EFF:
        return "latin"
    return None


# Scripts written without spaces count per character, the others per ~4 letters (one word).
_PER_CHAR = {"kana", "han", "ko", "th"}


def detect_language(text: str, hint: str | None = None, default: str = "en") -> str:
    """Best guess at the language of ``text`` as a short code ("en", "zh", "ja", "ru", ...)."""
    hint_code = normalize_hint(hint)
    fallback = hint_code or default
    text = unicodedata.normalize("NFKC", text or "").casefold()
    if text.isascii():  # fast path, same answer: only Latin letters can be there
        return _vote_latin(text, hint_code, fallback) if _ASCII_LETTER.search(text) else fallback
    counts: dict[str, int] = {}
    for ch in text:
        script = _script(ch)
        if script:
            counts[script] = counts.get(script, 0) + 1
    if not counts:
        return fallback
    weights = {s: (n if s in _PER_CHAR else n / 4) for s, n in counts.items()}
    if "kana" in weights or "han" in weights:
        weights["cjk"] = weights.pop("kana", 0) + weights.pop("han", 0)
    script = max(weights, key=lambda s: weights[s])
    if script == "cjk":
        if counts.get("kana"):
            return "ja"
        return "ja" if hint_code == "ja" else "zh"
    if script == "cyr":
        if re.search(r"[іїєґ]", text):
            return "uk"
        if re.search(r"[ыэъё]", text):
            return "ru"
        return hint_code if hint_code in _CYRILLIC_LANGS else "ru"
    if script == "latin":
        return _vote_latin(text, hint_code, fallback)
    return script


def _vote_latin(text: str, hint: str | None, fallback: str) -> str:
    scores = dict.fromkeys(_LATIN_ORDER, 0.0)
    for word in _WORD.findall(text):
        for lang, words in _STOPWORDS.items():
            if word in words:
                scores[lang] += 1
    for ch, lang in _DIACRITICS.items():
        if ch in text:
            scores[lang] += 1.5
    if "ç" in text:
        scores["fr"] += 0.75
        scores["pt"] += 0.75
    best = max(scores.values())
    if best == 0:
        return fallback
    top = [lang for lang in _LATIN_ORDER if scores[lang] == best]
    # Too little evidence (one word) or a tie: trust the platform's hint if the text allows it.
    if hint in scores and scores[hint] > 0 and (best < 2 or hint in top):
        return hint
    if len(top) > 1 and fallback in top:
        return fallback
    return top[0]
