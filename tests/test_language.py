"""Offline language guess: script detection, stop-word vote, platform hint."""

from __future__ import annotations

import pytest

from supportbot.language import detect_language, normalize_hint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("How do I reset my password?", "en"),
        ("can I talk to a real person", "en"),
        ("转人工", "zh"),
        ("我的订单什么时候发货？", "zh"),
        ("請問退款要多久", "zh"),
        ("パスワードを忘れました", "ja"),
        ("担当者につないでください", "ja"),
        ("オペレーター", "ja"),
        ("비밀번호를 잊어버렸어요", "ko"),
        ("Как сбросить пароль?", "ru"),
        ("Дякую, мені потрібна допомога", "uk"),
        ("¿Cómo puedo cambiar mi contraseña?", "es"),
        ("quiero hablar con una persona", "es"),
        ("Bonjour, je voudrais parler à un conseiller", "fr"),
        ("Comment est-ce que je change mon mot de passe ?", "fr"),
        ("Ich möchte mein Passwort zurücksetzen", "de"),
        ("Wie kann ich mit einem Mitarbeiter sprechen?", "de"),
        ("Olá, não consigo acessar minha conta", "pt"),
        ("Quero falar com um atendente, por favor", "pt"),
        ("Voglio parlare con una persona, grazie", "it"),
        ("Γεια σας, χρειάζομαι βοήθεια", "el"),
        ("مرحبا، أحتاج مساعدة", "ar"),
        ("שלום, אני צריך עזרה", "he"),
        ("สวัสดีครับ ต้องการความช่วยเหลือ", "th"),
        ("please help 转人工", "zh"),  # CJK characters outweigh two English words
        ("ＨＥＬＬＯ， ｃａｎ ｙｏｕ ｈｅｌｐ ｍｅ", "en"),  # full-width Latin
    ],
)
def test_detect_language(text: str, expected: str) -> None:
    assert detect_language(text) == expected


@pytest.mark.parametrize(
    ("text", "hint", "expected"),
    [
        ("", "zh-hans", "zh"),
        ("   ", None, "en"),
        ("👍", "pt-BR", "pt"),
        ("12345", "de_DE", "de"),
        ("ok", "fr", "fr"),  # no stop word: the hint decides
        ("no", "es", "es"),  # one ambiguous word: the hint decides
        ("人工", "ja", "ja"),  # kanji only could be Japanese
        ("人工", "zh-hant", "zh"),
        ("人工", None, "zh"),
        ("привет", "uk", "uk"),  # no letter tells Russian from Ukrainian
        ("How do I reset my password?", "zh-hans", "en"),  # clear text beats the hint
        ("Как сбросить пароль?", "en", "ru"),  # script beats the hint
    ],
)
def test_hint_used_when_text_is_ambiguous(text: str, hint: str | None, expected: str) -> None:
    assert detect_language(text, hint=hint) == expected


def test_default() -> None:
    assert detect_language("", default="de") == "de"
    assert detect_language("?!", hint="not a code", default="es") == "es"


@pytest.mark.parametrize(
    ("hint", "expected"),
    [("zh-hans", "zh"), ("pt-BR", "pt"), ("en_US", "en"), ("IW", "he"), ("", None), (None, None),
     ("x", None), ("123", None)],
)  # fmt: skip
def test_normalize_hint(hint: str | None, expected: str | None) -> None:
    assert normalize_hint(hint) == expected
