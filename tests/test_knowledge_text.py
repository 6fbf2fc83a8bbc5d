"""Index terms: Snowball stemming per language, Chinese normalisation and segmentation."""

from __future__ import annotations

import json
from pathlib import Path

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
    got = terms("支付宝借呗额度")
    assert {"支", "借", "额", "支付宝", "借呗", "额度"} <= set(got)
    assert "呗额" in got  # bigrams across word boundaries keep recall
    words = chinese.words("蚂蚁借呗额度提高了吗")
    assert "额度" in words and "提高" in words
    # function characters are no unigrams, but still inside bigrams
    assert "的" not in terms("我的花呗") and "的花" in terms("我的花呗")


def test_mixed_scripts() -> None:
    got = terms("acme云盘 password")
    assert "acm" in got and "password" in got and "云盘" in got


@pytest.fixture
def shipped_vocabulary():
    """Tests that switch the (process-wide) vocabulary put the shipped one back."""
    yield
    chinese.use_vocabulary(None)


def test_product_names_are_kept_whole_and_misspellings_folded() -> None:
    # jieba alone cuts 花呗 after a particle (我 / 得花 / 呗); the vocabulary's words keep it
    assert "花呗" in chinese.words("我想知道为什么我得花呗还是不能用")
    assert set(terms("花被怎么还")) == set(terms("花呗怎么还"))
    assert set(terms("蚂蚁借呗的利息")) == set(terms("借呗的利率"))


def test_shipped_synonyms_map_paraphrases_to_one_form() -> None:
    assert set(terms("借呗服务费")) == set(terms("借呗手续费"))
    assert set(terms("花呗多久到账")) == set(terms("花呗什么时候到账"))
    assert set(terms("花呗用不了")) == set(terms("花呗不能用"))


def test_staff_vocabulary_extends_the_shipped_one(tmp_path: Path, shipped_vocabulary) -> None:
    assert set(terms("网购退货")) != set(terms("网上购物退货"))
    (tmp_path / chinese.STAFF_VOCABULARY).write_text(
        "words: [云盘]\nsynonyms:\n  网上购物: [网购]\n  手续费: [佣金]\n", encoding="utf-8"
    )
    vocab = chinese.use_vocabulary(tmp_path)
    assert set(terms("网购退货")) == set(terms("网上购物退货"))
    assert set(terms("借呗佣金")) == set(terms("借呗手续费"))
    assert "服务费" not in vocab.synonyms  # the staff's 手续费 entry replaced the shipped one
    assert "云盘" in vocab.words and "花呗" in vocab.words
    assert vocab.digest != chinese.Vocabulary.read(chinese.DEFAULT_VOCABULARY).digest


def test_broken_staff_vocabulary_falls_back_to_the_shipped_one(
    tmp_path: Path, shipped_vocabulary
) -> None:
    (tmp_path / chinese.STAFF_VOCABULARY).write_text("synonyms:\n  a: b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must be a list"):
        chinese.use_vocabulary(tmp_path)
    (tmp_path / chinese.STAFF_VOCABULARY).write_text("words: 花呗借呗\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'words' must be a list"):
        chinese.use_vocabulary(tmp_path)
    assert chinese.vocabulary().digest == chinese.Vocabulary.read(chinese.DEFAULT_VOCABULARY).digest


async def test_editing_the_staff_vocabulary_reindexes_the_faq(
    tmp_path: Path, shipped_vocabulary
) -> None:
    from supportbot.knowledge import KnowledgeBase

    kdir = tmp_path / "k"
    kdir.mkdir()
    (kdir / "faq.jsonl").write_text(
        json.dumps({"id": "gift", "question": "礼品卡怎么兑换", "answer": "在账户页面兑换。"})
        + "\n"
        + json.dumps({"id": "card", "question": "银行卡怎么绑定", "answer": "在设置里绑定。"}),
        encoding="utf-8",
    )
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3")
    try:
        await kb.refresh()
        assert await kb.search("购物券") == []  # no character in common
        (kdir / chinese.STAFF_VOCABULARY).write_text(
            "synonyms:\n  礼品卡: [购物券]\n", encoding="utf-8"
        )
        await kb.refresh()
        assert kb.last_reindexed == ["faq.jsonl"]
        after = await kb.search("购物券")
        assert after and after[0].entry.id == "gift"
        (kdir / chinese.STAFF_VOCABULARY).write_text("synonyms: [broken", encoding="utf-8")
        await kb.refresh()
        assert any(chinese.STAFF_VOCABULARY in str(p.path) for p in kb.problems)
    finally:
        await kb.aclose()
