"""Handoff rules: the built-in rules in every language, syntax, override files, reload, marker,
CLI. The labelled dev set is scored in test_handoff_quality.py."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from supportbot.cli.handoff import handoff
from supportbot.handoff import (
    HANDOFF_MARKER,
    HandoffDetector,
    MarkerStreamFilter,
    check_phrases,
    default_rules_path,
    normalize,
    split_marker,
)
from supportbot.handoff.normalize import clause_breaks
from supportbot.problems import Problem

PHRASES = default_rules_path()

POSITIVE = {
    "en": [
        "can I talk to a real person",
        "Can I speak with a human, please?",
        "I want to talk to an agent",
        "connect me to a live agent",
        "is there a human I can talk to?",
        "give me a real person!!",
        "Please transfer me to someone",
        "human",
        "AGENT",
        "I need a human being",
        "you're useless, let me speak to a manager",
        "escalate this to a supervisor",
        "ＣＡＮ Ｉ ＴＡＬＫ ＴＯ Ａ ＨＵＭＡＮ",
        "talk   to\ta   real\nperson",
        # the misses
        "need help getting hold of an agent",
        "how can I reach somebody from your team",
        "I can't get through to an assistant",
        "this chatbot is hopeless, get me your support staff",
        "you are not helping at all",
    ],
    "zh": [
        "转人工",
        "我要人工客服",
        "人工",
        "请帮我转人工，谢谢",
        "能不能找个真人",
        "我想和真人聊聊",
        "人工服务",
        "轉人工",
        "我要找人工！",
        "联系人工客服",
        "转 人工",
        "人工智能是什么？算了，转人工吧",
        "我要找你们客服",
        "让主管来处理",
        "有真人吗",
        "机器人听不懂我说话",
    ],
    "es": [
        "quiero hablar con una persona",
        "¿Puedo hablar con un agente humano?",
        "necesito un asesor",
        "Pásame con alguien, por favor",
        "quiero hablar con alguien",
        "¿Puedo hablar con alguien de soporte?",
    ],
    "fr": [
        "Je voudrais parler à un conseiller",
        "je veux parler a quelqu'un",
        "Est-ce que je peux parler avec un humain ?",
        "mettez-moi avec un agent svp",
    ],
    "de": [
        "Ich möchte mit einem Mitarbeiter sprechen",
        "kann ich mit einem echten Menschen reden?",
        "Verbinden Sie mich bitte mit einem Berater",
        "ich brauche einen Menschen",
    ],
    "ja": [
        "担当者につないでください",
        "オペレーターと話したい",
        "人間と話したいです",
        "有人対応をお願いします",
    ],
    "pt": [
        "Quero falar com um atendente",
        "posso falar com uma pessoa real?",
        "preciso de atendimento humano",
        "me transfere para alguém por favor",
    ],
    "ru": [
        "Соедините меня с оператором",
        "хочу поговорить с живым человеком",
        "позовите оператора",
        "нужен живой человек",
    ],
}

NEGATIVE = {
    "en": [
        "is a human reviewing my refund?",
        "do real people read these messages?",
        "are you a real person?",
        "how many employees do you have",
        "I don't want to talk to a person, just answer",
        "the person at the store was rude",
        "where do I find my agenda settings",
        "does a human check the invoices before they are sent",
        "what is human resources' email",
        "I don't need a human, thanks",
        "I don't need an agent",
        "my travel agent booked it",
        "human resources",
        "Contacting someone on github.",
    ],
    "zh": [
        "人工智能是什么",
        "你们有多少员工",
        "退款是人工审核吗",
        "你是真人吗",
        "我不需要人工客服",
        "人工费多少钱",
        "我要退款",
        "人工智能",
        "有的人不用花呗有额度",
    ],
    "es": [
        "¿hay una persona que revisa mi pedido?",
        "¿eres un robot?",
        "hablar con una amiga",
        "no quiero hablar con una persona",
    ],
    "fr": ["êtes-vous un robot ?", "parler à un ami", "je ne veux pas parler à un humain"],
    "de": [
        "Bist du ein Mensch?",
        "Wie viele Mitarbeiter habt ihr?",
        "Ich möchte nicht mit einem Menschen sprechen",
    ],
    "ja": [
        "人工知能とは何ですか",
        "人に優しいデザイン",
        "人間と話したくない",
        "担当者と話す必要はありません",
    ],
    "pt": ["você é um robô?", "falar com um amigo", "não quero falar com um atendente"],
    "ru": ["ты живой человек?", "человек проверяет мой заказ?", "мне не нужен живой человек"],
}


# Round 5 and 6 (tune split): phrasings the first rules missed, and the hard negatives that
# broader rules must still leave alone.
MORE_POSITIVE = {
    "en": [
        "I'd like to reach your customer care department",
        "please transfer me to billing",
        "are any agents available right now?",
        "I'd like to be contacted by a representative",
        "I want this handled by a person, not an algorithm",
        "I would like to have a real person review my case",
        "agent agent agent",
        "who can I talk to about my cancelled flight?",
        "I need a real human's help",
        "hook me up with customer service",
    ],
    "zh": [
        "请帮我转接到财务部门",
        "我要人工服务，不要机器人",
        "能找个中文客服吗",
        "有客服可以帮我看看吗",
        "你是机器人吧？我要人",
        "我需要专人处理",
        "请工作人员尽快联系我",
    ],
    "es": [
        "¿algún agente disponible?",
        "quiero hablar con tu supervisor",
        "necesito ayuda de una persona real",
        "quiero poner una queja con el gerente",
        "¿con quién puedo hablar sobre mi reclamo?",
    ],
    "fr": [
        "transférez-moi vers un opérateur",
        "je préfère être servi par un humain",
        "un conseiller est-il disponible ?",
        "pouvez-vous me transférer à un agent ?",
        "je souhaite joindre mon conseiller clientèle",
    ],
    "de": [
        "Ich werde lieber von einem Menschen bedient",
        "ich will mich beim Chef beschweren",
        "kann ich jemanden aus der Buchhaltung sprechen?",
        "stellen Sie mich zum Kundendienst durch",
        "ich komme nicht zu einem Mitarbeiter durch, helfen Sie mir",
    ],
    "ja": [
        "人から電話がほしいです",
        "誰かに電話してもらえますか",
        "オペレーター",
        "専門の方に相談したい",
        "上の方に代わってください",
    ],
    "pt": [
        "quero reclamar com o gerente",
        "chama o seu supervisor",
        "não consigo falar com ninguém, me ajuda",
        "com quem posso falar sobre minha reclamação?",
    ],
    "ru": [
        "есть свободный оператор?",
        "предпочитаю, чтобы меня обслужил человек",
        "как дозвониться до живого оператора?",
        "хочу пожаловаться менеджеру",
        "может ли сотрудник подключиться к чату?",
    ],
}
MORE_NEGATIVE = {
    "en": [
        "you don't need to escalate this",
        "is there a person limit on the group booking?",
        "I need a person-to-person payment option",
        "when will support reply to my ticket?",
        "has a human reviewed my refund?",
        "was my refund approved by a person?",
        "can I talk to the assistant in Spanish?",
        "what was the agent's name?",
        "is the support team in the US or abroad?",
        "will someone contact me about the survey?",
    ],
    "zh": [
        "人工服务费是多少",
        "转人工需要收费吗",
        "有没有人买过这个，好用吗",
        "有人冒充你们客服给我打电话",
        "你们客服中心在哪个城市",
    ],
    "es": [
        "el gerente ya aprobó mi devolución",
        "¿pueden llamarme para confirmar la dirección?",
        "mi agente de viajes hizo la reserva",
    ],
    "fr": [
        "mon agent de voyage a fait la réservation",
        "les ressources humaines ont besoin de ma facture",
        "j'ai déjà parlé à un conseiller hier",
    ],
    "de": [
        "die Personalabteilung braucht meine Rechnung",
        "ich habe gestern schon mit einem Mitarbeiter gesprochen",
        "mein Reisebüro hat die Buchung gemacht",
    ],
    "ja": ["上司と相談してから連絡します", "人工芝の値段を教えて", "旅行代理店で予約しました"],
    "pt": [
        "o gerente já aprovou a troca",
        "meu agente de viagens fez a reserva",
        "já falei com um atendente ontem",
    ],
    "ru": [
        "мне не нужно ни с кем говорить, просто пришлите ссылку",
        "отдел кадров просит мой счёт",
        "бронировал через турагента",
    ],
}
# Round 10 (tune split): the largest gap was asking to be called back, in every language; its
# vetoes keep refusals, call-me-when notices and reports of what staff said from handing off.
ROUND10_POSITIVE = {
    "en": [
        "please call me back",
        "callback please",
        "can we hop on a call",
        "I'd like someone from billing to contact me",
        "Is there a way for a member of staff to help us over the phone?",
        "I would need to speak with customer service agent",
    ],
    "zh": ["给我回个电话", "请客服介入", "找个有权限的人批一下退款吗", "等人工等了半小时了",
           "有木有人工", "人工入口在哪"],
    "es": ["llámenme por favor", "quiero que me llamen", "¿con quién hablo para esto?"],
    "fr": ["rappelez-moi svp", "je veux être rappelé", "j'attends un conseiller depuis 20 minutes"],
    "de": ["rufen Sie mich bitte zurück", "bitte um Rückruf", "ist hier überhaupt jemand?"],
    "ja": ["電話ください", "折り返しお願いします", "すみません、どなたかいらっしゃいますか"],
    "pt": ["me liga por favor", "quero que me liguem", "quero falar com um ser humano"],
    "ru": ["перезвоните мне пожалуйста", "свяжитесь со мной", "к кому мне обратиться?"],
}
ROUND10_NEGATIVE = {
    "en": ["please don't call me, text only", "call me when my parcel is out for delivery",
           "the courier said he would call me back but never did",
           "do I need an agent to buy a policy?", "the human agents are always friendly"],
    "zh": ["不要给我打电话，发短信就行", "人工客服说退款三到五天，现在第六天了",
           "人工服务时间是几点到几点", "我想找个人帮我代收快递", "客服已经帮我处理好了"],
    "es": ["no me llamen, prefiero correo", "contáctenme solo por correo"],
    "fr": ["ne m'appelez pas svp", "appelez-moi quand le colis arrive"],
    "de": ["rufen Sie mich bitte nicht an", "rufen Sie mich an, wenn das Paket da ist"],
    "ja": ["電話はしないでください", "到着したら電話ください", "住所確認の電話をもらえますか"],
    "pt": ["não me liguem, prefiro e-mail", "me liga quando o entregador estiver chegando"],
    "ru": ["не звоните мне, пишите в чат", "позвоните мне когда курьер будет рядом"],
}
# Round 11 (tune split): the rule families its tuning added, each with the hard negatives that
# must stay quiet (ratings, past contact, job seekers, reports of what staff said, refusals).
ROUND11_POSITIVE = {
    "en": ["could somebody from accounts ring me this evening?",
           "are you a bot? if so, put me through to a person",
           "please arrange for a technician to call me",
           "can we set up a call with a specialist?",
           "I'd like to go over this with one of your people"],
    "zh": ["麻烦让售后尽快联系我", "你们主管是谁，我要跟他谈谈", "希望有人尽快给我回电话"],
    "es": ["¿me pasas con un asesor humano?"],
    "fr": ["je veux qu'on me rappelle demain", "un technicien est dispo ?",
           "pouvez-vous demander à un conseiller de me rappeler ?",
           "je préfère qu'une personne s'occupe de mon dossier",
           "puis-je être recontacté par un conseiller ?"],
    "de": ["bitte an einen Sachbearbeiter weiterleiten",
           "jemand aus der Buchhaltung soll mich bitte anrufen",
           "ich will heute noch einen Rückruf",
           "Mensch statt Chatbot, bitte",
           "ich hätte gern einen Termin mit meinem Kundenberater",
           "gibt es einen Berater, der gerade Zeit hat?",
           "es muss sich bitte ein Mitarbeiter darum kümmern",
           "ist es möglich, einen Rückruf zu erhalten?"],
    "ja": ["スタッフさんとお話ししたいのですが", "担当者の方から電話してもらえますか"],
    "pt": ["encaminhe meu chamado para um atendente, por favor", "cadê o atendente?"],
    "ru": ["звонок специалисту, пожалуйста", "пусть лучше специалист разберется",
           "прошу переключить на отдел претензий"],
}
ROUND11_NEGATIVE = {
    "en": ["is a real person going to read my appeal?", "please don't make me call anyone",
           "I'm not a robot, the captcha is broken", "no callback needed, all sorted"],
    "zh": ["你们还招人工客服吗", "和客服聊完了，没事了", "之前找过客服了，说要等"],
    "es": ["¿dónde califico la atención del agente?"],
    "fr": ["ne me rappelez pas, pas besoin de rappel"],
    "de": ["wie bewerte ich den Chat mit dem Mitarbeiter?",
           "ich hatte schon Kontakt mit dem Support, danke",
           "mein Berater hat gesagt, das dauert",
           "sind Ihre Mitarbeiter geschult?"],
    "ja": ["オペレーターの対応を評価したい", "スタッフの対応が丁寧でした"],
    "ru": ["передайте спасибо оператору", "человек посмотрит мою заявку?"],
}
# round 12 (tune = round 11): modal/imperative + person in German and Russian word order,
# polite requests, availability questions; vetoes for praise of a past call, jobs, companions
ROUND12_POSITIVE = {
    "en": ["I'd rather sort this out with an actual employee",
           "could someone from billing check my statement please?",
           "any chance of having a supervisor look at this?"],
    "zh": ["能不能请人打个电话给我", "帮我联系配送中心的师傅", "让你们财务部的人跟我联系",
           "请转高级客服"],
    "es": ["prefiero ver este asunto directamente con un asesor"],
    "fr": ["pouvez-vous me faire recontacter par le service technique ?",
           "qui pourrait me rappeler cet après-midi ?",
           "je souhaite être mise en contact avec un responsable"],
    "de": ["Holen Sie bitte Ihre Vorgesetzte",
           "können wir das bitte telefonisch klären?",
           "schalten Sie jetzt einen Techniker mit dazu",
           "gibt es denn keinen Mitarbeiter, der sich damit auskennt und mir helfen kann?",
           "ist gerade ein Kundenberater im Chat erreichbar?"],
    "ja": ["詳しい人に説明したいので、つないでほしいです", "オペレーターの方はいますか"],
    "pt": ["um atendente pode verificar meu pedido pessoalmente?"],
    "ru": ["направьте мою заявку специалисту", "кто-нибудь из поддержки может мне ответить?",
           "хочу уточнить детали с вашим менеджером", "дозвонитесь до меня уже"],
}
ROUND12_NEGATIVE = {
    "en": ["can I bring a support person with me to the branch?"],
    "zh": ["我想问问经理岗位的待遇"],
    "de": ["das Telefonat mit Ihrem Kollegen war super, danke",
           "keinen Mitarbeiter bitte, nur die Sendungsnummer"],
    "ja": ["オペレーターから連絡があり、返金されました"],
    "pt": ["recebi uma ligação de um atendente de vocês, é verdade?"],
}
# round 13 (tune = round 12 and three fresh batches of general constructions): word lists x
# phrases in every language, and vetoes narrowed where they cancelled requests (the zh hotline
# and "客服说不…" vetoes, the es future-review veto, the de "habe … gesprochen" veto); each line
# fails with round 12's rules
ROUND13_POSITIVE = {
    "en": ["are any of your advisors free to chat?",
           "I want someone to actually look into my refund",
           "would somebody from accounts be able to ring me?",
           "can my complaint be reviewed by a supervisor?",
           "would it be ok if an agent phoned me instead?",
           "can you get somebody from billing on the phone?",
           "I'd prefer to explain the problem to an actual human",
           "put me through to whoever is on call",
           "I'd like to request a call from your support team",
           "can I be passed on to the case handler?"],
    "zh": ["我想打你们售后电话当面说清楚", "帮我接一下客服热线的工作人员", "你们的人都去哪了",
           "有没有专员能跟我对接一下", "我要跟人工说，不跟机器人说"],
    "es": ["prefiero que mi caso lo vea un supervisor",
           "quiero hablarlo por teléfono con un agente",
           "me gustaría que alguien del banco revisara mi cuenta",
           "¿el supervisor podría atenderme hoy?"],
    "fr": ["je voudrais m'entretenir avec mon supérieur hiérarchique",
           "mettez-moi en relation avec le service des litiges",
           "quelqu'un de chez vous pourrait-il me téléphoner demain ?",
           "je veux parler à la direction",
           "vous pouvez transférer la discussion à un conseiller ?"],
    "de": ["Verbinden Sie mich mit nem Berater",
           "ich möchte eine Reklamation bei Ihrem Vorgesetzten einreichen",
           "haben Sie jemanden, der Polnisch spricht?",
           "kann das bitte ein Sachbearbeiter prüfen?",
           "ich hätte das gern mit Ihrer Chefin gesprochen",
           "können Sie mir einen Techniker vermitteln?"],
    "ja": ["上の人に代わってください"],
    "pt": ["prefiro resolver isso com um atendente"],
}
ROUND13_NEGATIVE = {
    "en": ["is there a charge for talking to an adviser?", "stop sending me newsletters",
           "can I have a callback tomorrow? actually no, email is fine"],
    "zh": ["不想跟客服聊了，我自己弄", "上午客服给我打电话了，说已经退款"],
    "es": ["¿hay que hablar con alguien para dar de baja o se puede por la app?"],
    "fr": ["faut-il appeler un conseiller pour changer d'offre ?"],
    "de": ["muss ich mit jemandem telefonieren, um den Vertrag zu kündigen?",
           "sind Ihre Mitarbeiter am Wochenende erreichbar?",
           "sprechen Ihre Berater auch Englisch?"],
    "ja": ["退会は窓口に連絡しないとできませんか"],
    "pt": ["tenho que falar com um atendente para cancelar ou tem como pelo site?"],
}
for _table, _more in ((POSITIVE, MORE_POSITIVE), (NEGATIVE, MORE_NEGATIVE),
                      (POSITIVE, ROUND10_POSITIVE), (NEGATIVE, ROUND10_NEGATIVE),
                      (POSITIVE, ROUND11_POSITIVE), (NEGATIVE, ROUND11_NEGATIVE),
                      (POSITIVE, ROUND12_POSITIVE), (NEGATIVE, ROUND12_NEGATIVE),
                      (POSITIVE, ROUND13_POSITIVE), (NEGATIVE, ROUND13_NEGATIVE)):
    for _lang, _texts in _more.items():
        _table[_lang] = _table[_lang] + _texts


@pytest.fixture(scope="module")
def detector() -> HandoffDetector:
    d = HandoffDetector.load(None)
    assert d.problems == []
    return d


def _cases(table: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(lang, text) for lang, texts in table.items() for text in texts]


@pytest.mark.parametrize(("lang", "text"), _cases(POSITIVE))
def test_positive_phrases_hand_off(detector: HandoffDetector, lang: str, text: str) -> None:
    result = detector.detect(text)
    assert result.handoff, f"{text!r} should hand off ({result.reason})"
    assert result.reason.startswith(("phrase:", "frustration:"))
    assert result.lang is not None


@pytest.mark.parametrize(("lang", "text"), _cases(NEGATIVE))
def test_mentions_of_people_do_not_hand_off(
    detector: HandoffDetector, lang: str, text: str
) -> None:
    result = detector.detect(text)
    assert not result.handoff, f"{text!r} should not hand off ({result.reason})"
    assert result.reason == "none" or result.reason.startswith("negative:")


def test_negatives_in_every_language_do_veto(detector: HandoffDetector) -> None:
    # Without the negative list each of these would hand off: the veto is what stops them.
    vetoed = {
        lang: [t for t in texts if detector.detect(t).reason.startswith("negative:")]
        for lang, texts in NEGATIVE.items()
    }
    assert all(vetoed[lang] for lang in NEGATIVE), vetoed
    no_negatives = HandoffDetector(None, replace(detector.rules, negative=()))
    for texts in vetoed.values():
        for text in texts:
            assert no_negatives.detect(text).handoff, text


def test_table_is_big_enough() -> None:
    for lang in ("en", "zh"):
        assert len(POSITIVE[lang]) >= 15 and len(NEGATIVE[lang]) >= 10
    for lang in ("es", "fr", "de", "ja", "pt", "ru"):
        assert len(POSITIVE[lang]) >= 8 and len(NEGATIVE[lang]) >= 5


def test_rule_regexes_compile_lazily_and_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading ~450 rules compiles none of them (start-up stays fast); a message compiles only
    the rules its words reach, and each pattern only once (shared by later messages and reloads)."""
    import re

    from supportbot.handoff import patterns

    compiled: list[str] = []
    real_compile = re.compile

    def counting(pattern, flags=0):  # type: ignore[no-untyped-def]
        compiled.append(pattern)
        return real_compile(pattern, flags)

    monkeypatch.setattr(patterns.re, "compile", counting)
    monkeypatch.setattr(patterns, "_COMPILED", {})  # as in a fresh process
    detector = HandoffDetector.load(None)
    rules = detector.rules
    everything = {r.pattern for r in (*rules.positive, *rules.frustration, *rules.negative)}
    assert not everything & set(compiled), "loading the rules compiled some of them"
    text = "Hallo, ich möchte bitte mit einem echten Menschen sprechen"
    assert detector.detect(text).handoff
    first = [p for p in compiled if p in everything]
    assert first and len(first) < len(everything) // 4
    assert len(first) == len(set(first))
    compiled.clear()
    assert detector.detect(text).handoff
    assert HandoffDetector.load(None).detect(text).handoff
    assert not everything & set(compiled), "a rule was compiled twice"


def test_reason_names_language_and_pattern() -> None:
    d = HandoffDetector.from_text("en:\n  positive:\n    - talk to a (real) person\n")
    hit = d.detect("Talk to a person!")
    assert hit.reason == 'phrase:en:"talk to a (real) person"' and hit.line == 3
    assert hit.matched == "talk to a person" and hit.path == "<phrases>"
    assert d.detect("hello").reason == "none"
    assert d.detect("").reason == "none"


def test_negative_vetoes_only_where_it_overlaps() -> None:
    d = HandoffDetector.from_text("zh:\n  positive:\n    - 人工\n  negative:\n    - 人工智能\n")
    vetoed = d.detect("人工智能是什么")
    assert not vetoed.handoff and vetoed.reason == 'negative:zh:"人工智能"'
    assert d.detect("人工智能是什么？人工").handoff
    # A later occurrence that is not covered by the negative still counts.
    assert d.detect("人工智能人工").handoff


def test_an_answer_closed_off_by_punctuation_does_not_negate_the_next_clause() -> None:
    """"No, quiero hablar con un agente" answers the bot, then asks: the negative rule "no
    quiero ... agente" must not read it as one refusal. Without the comma it is one."""
    d = HandoffDetector.from_text(
        """
es:
  positive:
    - quiero hablar con un agente
  negative:
    - no quiero hablar con un agente
"""
    )
    assert d.detect("No, quiero hablar con un agente").handoff
    assert d.detect("Si no. Quiero hablar con un agente").handoff
    refused = d.detect("no quiero hablar con un agente")
    assert not refused.handoff and refused.reason.startswith("negative:es:")
    assert not d.detect("No, no quiero hablar con un agente").handoff
    assert not d.vetoed("No, quiero hablar con un agente")
    assert d.vetoed("no quiero hablar con un agente")


@pytest.mark.parametrize("text", [
    "No, quiero hablar con un agente",
    "Não. Quero falar com um atendente",
    "No. I want to talk to a human",
])
def test_builtin_rules_hear_an_answer_then_a_request(detector: HandoffDetector, text: str) -> None:
    assert detector.detect(text).handoff


def test_clause_breaks_mark_where_the_punctuation_was() -> None:
    text = "Si no, quiero ... ¡agente!"
    norm = normalize(text)
    assert norm == "si no quiero agente"
    assert sorted(clause_breaks(text)) == [5, 12]  # after "si no" and after "quiero"
    assert clause_breaks("no quiero agente") == frozenset()
    assert clause_breaks("不是，我要人工") == frozenset()  # no spaces to mark in Chinese


def test_syntax_optional_choice_wildcard_prefix_whole() -> None:
    d = HandoffDetector.from_text(
        """
en:
  positive:
    - "[speak|talk] to (a|an) (real|live) [person|human]"
    - escalate * manager
    - agent*
    - = help
"""
    )
    assert d.problems == []
    assert d.detect("I want to speak to a live human").handoff
    assert d.detect("talk to person").handoff
    assert not d.detect("talk to a robot").handoff
    assert d.detect("please escalate my ticket to the manager").handoff
    assert not d.detect("escalate my very old broken ticket to the manager").handoff  # 5 words
    assert d.detect("agents!").handoff
    assert not d.detect("reagent").handoff
    assert d.detect("Help!").handoff
    assert not d.detect("help me with billing").handoff
    # Latin words only match whole words.
    assert not d.detect("stalk to a person").handoff


def test_normalize() -> None:
    assert normalize("  Ｔａｌｋ   TO\u3000a  Person!!? ") == "talk to a person"
    assert normalize("转 人工") == "转人工"
    assert normalize("Café  Straße") == "cafe strasse"
    assert normalize("ガイド") == "ガイド"  # dakuten survive
    assert normalize("ｶﾞｲﾄﾞ") == "ガイド"  # half-width katakana → full-width


BROKEN = """\
en:
  positive:
    - talk to a (real person
    - "[a|b"
    - "(optional) (only)"
    - "human | person"
    - fine phrase
  bogus:
    - x
"""


def test_check_phrases_reports_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "handoff_phrases.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    problems = check_phrases(path)
    assert all(isinstance(p, Problem) for p in problems)
    lines = sorted(p.line for p in problems)
    assert lines == [3, 4, 5, 6, 8]
    text = "\n".join(str(p) for p in problems)
    assert f"{path}:3: " in text and "missing ')'" in text
    assert "only optional parts" in text
    assert "'|' outside brackets" in text
    assert "unknown key 'bogus'" in text


def test_check_phrases_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("en:\n  positive:\n    - ok\n  - broken: [\n", encoding="utf-8")
    problems = check_phrases(path)
    assert len(problems) == 1
    assert problems[0].line == 4 and "invalid YAML" in problems[0].message
    assert check_phrases(tmp_path / "missing.yaml")[0].message == "phrases file not found"
    assert check_phrases(PHRASES) == []


def _write(path: Path, text: str, bump: int) -> None:
    path.write_text(text, encoding="utf-8")
    # Move mtime explicitly so the test does not depend on the file system's clock granularity.
    stamp = 1_700_000_000 + bump
    os.utime(path, (stamp, stamp))


def test_live_reload_keeps_last_good_version(tmp_path: Path) -> None:
    path = tmp_path / "handoff_phrases.yaml"
    _write(path, "en:\n  positive:\n    - talk to a person\n", 0)
    d = HandoffDetector.load(path, defaults=False)
    assert d.detect("talk to a person").handoff
    assert not d.detect("operator please").handoff
    assert d.refresh() is False  # unchanged: nothing to do

    _write(path, "en:\n  positive:\n    - operator please\n", 1)
    assert d.refresh() is True
    assert d.detect("operator please").handoff
    assert not d.detect("talk to a person").handoff

    # Broken YAML: keep the previous rules, record the problem.
    _write(path, "en:\n  positive: [\n", 2)
    assert d.refresh() is False
    assert d.detect("operator please").handoff
    assert d.problems and d.problems[0].path == path

    # One bad phrase: the good ones load, the bad one is reported.
    _write(path, "en:\n  positive:\n    - agent please\n    - (oops\n", 3)
    assert d.refresh() is True
    assert d.detect("agent please").handoff
    assert [p.line for p in d.problems] == [4]

    # File removed: last good rules stay.
    path.unlink()
    d.refresh()
    assert d.detect("agent please").handoff
    assert "not found" in d.problems[0].message


def test_load_never_raises(tmp_path: Path) -> None:
    d = HandoffDetector.load(tmp_path / "nope.yaml", defaults=False)
    assert not d.detect("talk to a person").handoff
    assert d.problems
    (tmp_path / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    d = HandoffDetector.load(tmp_path / "list.yaml")
    assert d.problems[0].line == 1
    assert d.detect("talk to a person").handoff  # the built-in rules still work


def test_missing_override_means_builtin_rules_only(tmp_path: Path) -> None:
    d = HandoffDetector.load(tmp_path / "nope.yaml")
    assert d.problems == []
    assert d.sources == (str(PHRASES),)
    assert d.detect("I want to talk to a human").handoff


def test_pathological_input_is_fast_enough_to_finish(detector: HandoffDetector) -> None:
    # Long unspaced text and long word runs must not blow up the wildcard patterns.
    assert not detector.detect("a" * 4000).handoff
    assert not detector.detect("word " * 800).handoff
    assert detector.detect("人" * 2000 + "转人工").handoff


def test_stacked_wildcards_in_a_staff_rule_cannot_hang_detection() -> None:
    """Every stretch of text splits into wildcard units one way only, so a phrase that stacks
    wildcards (legal, if clumsy) costs a pass per wildcard on a message it does not match.
    With units of "one or two characters" this message took hours: the test would not end."""
    d = HandoffDetector.from_text(
        "en:\n  positive:\n    - = *8 *8 *8 *8 human\n    - = *8 *8 *8 *8 人工\n"
    )
    assert not d.detect("human " + "word " * 60).handoff
    assert not d.detect("人工" + "我想要一个可以帮我处理退款问题的" * 8).handoff
    assert d.detect("please please get me a human").handoff
    assert d.detect("我想要人工").handoff


def test_wildcards_count_words_or_pairs_of_chinese_characters() -> None:
    """``*N``: up to N words, or up to 2N+1 Chinese/Japanese characters."""
    d = HandoffDetector.from_text(
        "en:\n  positive:\n    - talk *1 human\nzh:\n  positive:\n    - 转 *1 人工\n"
    )
    assert d.detect("talk to human").handoff and not d.detect("talk to a human").handoff
    for gap in ("", "给", "给我", "给我们"):
        assert d.detect(f"转{gap}人工").handoff, gap
    assert not d.detect("转给我们的人工").handoff  # four characters
    assert d.detect("转 app 人工").handoff  # a word counts as one unit


@pytest.mark.parametrize(
    ("reply", "expected", "found"),
    [
        ("Sorry, I can't help with that. [[HANDOFF]]", "Sorry, I can't help with that.", True),
        ("[[ handoff ]] Let me get someone.", "Let me get someone.", True),
        ("one [[Hand_Off]] two", "one two", True),
        ("line one\n[[HANDOFF]]\nline two", "line one\n\nline two", True),
        ("No marker here [[other]]", "No marker here [[other]]", False),
        (HANDOFF_MARKER, "", True),
    ],
)
def test_split_marker(reply: str, expected: str, found: bool) -> None:
    assert split_marker(reply) == (expected, found)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_marker_stream_filter(size: int) -> None:
    reply = "I cannot help here. [[ HANDOFF ]] A colleague [x] will follow up."
    chunks = [reply[i : i + size] for i in range(0, len(reply), size)]
    f = MarkerStreamFilter()
    shown = "".join(f.feed(c) for c in chunks) + f.flush()
    assert f.found
    assert shown == "I cannot help here. A colleague [x] will follow up."
    g = MarkerStreamFilter()
    plain = "a [b] c [[d]] e ["
    assert "".join(g.feed(c) for c in plain) + g.flush() == plain
    assert not g.found


# --------------------------------------------------------------------------- CLI


def test_cli_test_json(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        handoff,
        ["test", "--json", "转人工", "is a human reviewing my refund?"],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["handoff"] for r in rows] == [True, False]
    assert rows[0]["text"] == "转人工" and rows[0]["reason"].startswith("phrase:zh:")
    assert set(rows[1]) == {"text", "handoff", "reason", "matched", "file", "line"}
    assert rows[0]["file"] == str(PHRASES) and rows[0]["matched"] == "转人工"


def test_cli_test_stdin_and_plain_output() -> None:
    runner = CliRunner()
    result = runner.invoke(
        handoff,
        ["test"],
        input="can I talk to a real person\n\n人工智能是什么\n",
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("HANDOFF") and "[en]" in lines[0]
    assert "(default_rules.yaml line " in lines[1] and 'matched "talk to a real person"' in lines[1]
    assert lines[2].startswith("bot") and "[zh]" in lines[2]
    assert len(lines) == 4  # the blank line is skipped


def test_cli_default_path_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "handoff_phrases.yaml").write_text(
        "en:\n  positive:\n    - banana\n", encoding="utf-8"
    )
    monkeypatch.setenv("SUPPORTBOT_PROMPTS_DIR", str(tmp_path))
    result = CliRunner().invoke(handoff, ["test", "--json", "banana"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reason"] == 'phrase:en:"banana"'


def test_cli_check(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(handoff, ["check"])
    assert ok.exit_code == 0 and "OK" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN, encoding="utf-8")
    result = runner.invoke(handoff, ["check", "--phrases", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3:" in result.output


def test_cli_warns_about_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN, encoding="utf-8")
    result = CliRunner().invoke(handoff, ["test", "--json", "--phrases", str(bad), "fine phrase"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["handoff"] is True
    assert f"{bad}:3:" in result.stderr


# --------------------------------------------------------------------------- word lists, overrides


def test_word_lists_expand_in_phrases() -> None:
    d = HandoffDetector.from_text(
        """
en:
  words:
    talk: [talk, speak, have a word]
    person: [agent*, human, real person]
  positive:
    - "<talk> [to|with] (a|an) <person>"
    - "reach *2 <person>"
"""
    )
    assert d.problems == []
    assert d.detect("can I have a word with an agent").matched == "have a word with an agent"
    assert d.detect("let me speak to a real person").handoff
    assert d.detect("how do I reach your support human").handoff
    assert not d.detect("how do I reach the shop, it is far from here, human").handoff  # gap > 2
    assert not d.detect("talk to a robot").handoff


def test_bad_word_lists_are_reported_where_written() -> None:
    d = HandoffDetector.from_text(
        """
en:
  words:
    person: [agent, "(oops"]
  positive:
    - "talk to <person>"
    - "talk to <nobody>"
"""
    )
    assert {(p.line, "oops" in p.message or "<nobody>" in p.message) for p in d.problems} == {
        (4, True), (7, True)
    }
    assert d.detect("talk to agent").handoff  # the good entry and rule still load


def test_override_extends_builtin_word_lists(tmp_path: Path) -> None:
    path = tmp_path / "handoff_phrases.yaml"
    builtin = HandoffDetector.load(None)
    assert not builtin.detect("can I talk to the sommelier").handoff
    path.write_text("en:\n  words:\n    person: [sommelier]\n", encoding="utf-8")
    d = HandoffDetector.load(path)
    assert d.problems == []
    hit = d.detect("can I talk to the sommelier")
    assert hit.handoff and hit.path == str(PHRASES)  # a built-in rule, with the staff's word
    assert d.sources == (str(PHRASES), str(path))
    assert check_phrases(path) == []


def test_override_can_replace_the_builtin_rules(tmp_path: Path) -> None:
    path = tmp_path / "handoff_phrases.yaml"
    path.write_text("use_defaults: false\nen:\n  positive:\n    - banana\n", encoding="utf-8")
    d = HandoffDetector.load(path)
    assert d.sources == (str(path),)
    assert d.detect("banana").handoff and not d.detect("talk to a human").handoff


def test_comment_only_starter_file_adds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "handoff_phrases.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    assert check_phrases(path) == []
    assert HandoffDetector.load(path).rule_count == HandoffDetector.load(None).rule_count


def test_frustration_rules_explain_themselves(detector: HandoffDetector) -> None:
    hit = detector.detect("this chatbot is hopeless, get me your support staff")
    assert hit.handoff and hit.reason.startswith(("frustration:en:", "phrase:en:"))
    hit = detector.detect("you are not helping at all")
    assert hit.handoff and hit.reason.startswith("frustration:en:")
    assert hit.line > 0 and hit.matched


def test_cli_outside_a_project_uses_builtin_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts").mkdir()  # an empty prompts folder: no handoff_phrases.yaml
    monkeypatch.setenv("SUPPORTBOT_PROMPTS_DIR", str(tmp_path / "prompts"))
    result = CliRunner().invoke(handoff, ["test", "--json", "I want to talk to a human"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["handoff"] is True
    assert f"rules: {PHRASES}, " in result.stderr  # then the package's starter file


def test_cli_score(tmp_path: Path) -> None:
    data = tmp_path / "set.jsonl"
    rows = [
        {"text": "talk to a human", "lang": "en", "handoff": True, "split": "score"},
        {"text": "where is my parcel", "lang": "en", "handoff": False, "split": "score"},
        {"text": "转人工", "lang": "zh", "handoff": True, "split": "tune"},
    ]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    result = CliRunner().invoke(handoff, ["score", str(data), "--split", "score", "--json"])
    assert result.exit_code == 0, result.output
    table = {row["lang"]: row for row in json.loads(result.stdout)}
    assert set(table) == {"en", "all"}
    assert table["en"]["recall"] == 1.0 and table["en"]["fpr"] == 0.0
