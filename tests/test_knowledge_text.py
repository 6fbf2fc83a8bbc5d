"""Index terms: Snowball stemming per language, Chinese normalisation and segmentation."""

from __future__ import annotations

import pytest

from supportbot.knowledge import chinese
from supportbot.knowledge.text import language_of, terms


@pytest.mark.parametrize(
    ("lang", "a", "b"),
    [
        ("en", "refunds", "refunded"),
        ("en", "resetting passwords", "reset password"),
        ("es", "cancelaciones", "cancelación"),
        ("fr", "remboursements", "remboursement"),
        ("de", "Rechnungen", "Rechnung"),
        ("pt", "cancelamentos", "cancelamento"),
        ("ru", "пароли", "пароль"),
    ],
)
def test_snowball_stemming_per_language(lang: str, a: str, b: str) -> None:
    assert terms(a, lang) == terms(b, lang)
    assert terms(a, lang)  # not dropped


def test_language_is_detected_when_not_given() -> None:
    assert language_of("¿Cómo puedo cancelar mi suscripción?") == "es"
    assert language_of("Comment annuler mon abonnement ?") == "fr"
    assert language_of("Как сбросить пароль") == "ru"
    assert language_of("How do I cancel?") == "en"
    assert language_of("退款需要多久") == "en"  # no stemmer for Chinese: Latin words in English
    assert language_of("anything", "pt-BR") == "pt"


def test_english_stop_words_only_for_english() -> None:
    assert terms("how do I reset my password") == ["reset", "password"]
    assert "how" in terms("how do I reset", keep_stop_words=True)


def test_full_width_and_case_are_folded() -> None:
    assert terms("ＡＢＣ１２３ Refund") == terms("abc123 refund")


def test_traditional_and_simplified_match() -> None:
    assert chinese.to_simplified("花唄怎麼還款") == "花呗怎么还款"
    assert set(terms("花唄怎麼還款")) == set(terms("花呗怎么还款"))
    assert chinese.to_simplified("no han here") == "no han here"


def test_colloquial_variants_are_normalised() -> None:
    assert set(terms("咋还钱")) == set(terms("怎么还款"))
    assert set(terms("为啥不能用")) == set(terms("为什么不能用"))


def test_chinese_terms_are_characters_bigrams_and_words() -> None:
    got = terms("蚂蚁借呗额度")
    assert {"蚂", "借", "额", "蚂蚁", "借呗", "额度"} <= set(got)
    assert "呗额" in got  # bigrams across word boundaries keep recall
    words = chinese.words("蚂蚁借呗额度提高了吗")
    assert "额度" in words and "提高" in words
    # function characters are no unigrams, but still inside bigrams
    assert "的" not in terms("我的花呗") and "的花" in terms("我的花呗")


def test_mixed_scripts() -> None:
    got = terms("acme云盘 password")
    assert "acm" in got and "password" in got and "云盘" in got
