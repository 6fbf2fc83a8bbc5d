"""Re-flowing Markdown paragraphs: single newlines inside a paragraph go, structure stays."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from supportbot.adapters.slack.mrkdwn import to_mrkdwn
from supportbot.adapters.telegram import TelegramAdapter
from supportbot.adapters.telegram.text import markdown_to_html
from supportbot.config import Settings
from supportbot.engine import Engine
from supportbot.testing.fake_telegram import FakeTelegram
from supportbot.textflow import reflow

CUSTOMER = 111  # FakeTelegram.private_message's default user (and private chat) id


def test_a_paragraph_written_with_hard_wraps_becomes_one_line():
    text = "Refunds take **5–10 business days** to appear on\nyour statement once approved.\n"
    assert reflow(text) == (
        "Refunds take **5–10 business days** to appear on your statement once approved.\n")


def test_paragraphs_stay_apart_and_blank_lines_are_kept():
    assert reflow("one\ntwo\n\nthree\nfour") == "one two\n\nthree four"
    assert reflow("a\n\n\nb") == "a\n\n\nb"


def test_windows_and_old_mac_newlines():
    assert reflow("one\r\ntwo\r\n\r\nthree") == "one two\n\nthree"
    assert reflow("one\rtwo") == "one two"


def test_trivial_inputs():
    assert reflow("") == ""
    assert reflow("\n") == "\n"
    assert reflow("no newline at all") == "no newline at all"
    assert reflow("ends with one\n") == "ends with one\n"


def test_list_items_keep_their_lines():
    text = "Steps:\n- Open Settings\n- Click Billing\n* star\n+ plus\n• bullet\n1. first\n2) second"
    assert reflow(text) == text


def test_an_indented_line_continues_its_list_item_and_a_flush_one_does_not():
    text = "- Open Settings and\n  choose Billing.\n- Then wait.\nAfter the list."
    assert reflow(text) == "- Open Settings and choose Billing.\n- Then wait.\nAfter the list."


def test_nested_items_keep_their_lines():
    text = "- top\n  - nested\n    continued\n- next"
    assert reflow(text) == "- top\n  - nested continued\n- next"


def test_fenced_code_is_left_exactly_as_it_is():
    text = "Run:\n```sh\npip install x\nsupportbot init\n\nsupportbot chat\n```\nthen\nenjoy"
    assert reflow(text) == (
        "Run:\n```sh\npip install x\nsupportbot init\n\nsupportbot chat\n```\nthen enjoy")


def test_tilde_fences_and_unterminated_fences():
    assert reflow("~~~\na\nb\n~~~\nc\nd") == "~~~\na\nb\n~~~\nc d"
    assert reflow("```\na\nb") == "```\na\nb"  # a stream cut mid-code: keep it all


def test_a_shorter_fence_does_not_close_a_longer_one():
    text = "````\n```\ninside\n````\nx\ny"
    assert reflow(text) == "````\n```\ninside\n````\nx y"


def test_indented_code_after_a_blank_line_keeps_its_lines():
    text = "Example:\n\n    line one\n    line two\n\nafter\nthat"
    assert reflow(text) == "Example:\n\n    line one\n    line two\n\nafter that"


def test_tables_keep_their_rows():
    text = "Plans:\n| Plan | Price |\n|------|------:|\n| Free | 0 |\n| Pro | 10 |"
    assert reflow(text) == text
    bare = "Plan | Price\n--- | ---\nFree | 0"
    assert reflow(bare).splitlines()[1] == "--- | ---"


def test_headings_quotes_and_rules_stand_alone():
    assert reflow("# Title\nbody\ntext") == "# Title\nbody text"
    assert reflow("> quoted\n> more\nplain") == "> quoted\n> more\nplain"
    assert reflow("above\n---\nbelow") == "above\n---\nbelow"
    assert reflow("a\n***\nb") == "a\n***\nb"


def test_markdown_hard_breaks_are_kept_without_their_markers():
    assert reflow("Acme Cloud  \n1 Main St\\\nSpringfield\nUSA") == (
        "Acme Cloud\n1 Main St\nSpringfield USA")


def test_chinese_and_japanese_lines_join_without_a_space():
    assert reflow("退款将在\n5 个工作日内到账。") == "退款将在 5 个工作日内到账。"
    assert reflow("退款将在五个\n工作日内到账。") == "退款将在五个工作日内到账。"
    assert reflow("返金は\nお支払い方法に") == "返金はお支払い方法に"
    assert reflow("see\n退款") == "see 退款"


def test_extra_spaces_at_the_join_collapse_to_one():
    assert reflow("one \n   two") == "one two"


TOKENS = [*"ab 退款\n\r\t-*+#>|`~\\1.)", "```", "    ", "  \n", "\n\n", "- ", "| x |"]
MARKDOWNISH = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)


def visible(text: str) -> str:
    return "".join(text.replace("\\", "").split())


@given(MARKDOWNISH)
def test_reflow_keeps_every_character_never_adds_lines_and_is_idempotent(text):
    once = reflow(text)
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    if "  \n" not in lines and "\\\n" not in lines:
        assert reflow(once) == once  # (a hard break's marker is dropped, so it is once only)
    assert visible(once) == visible(text)  # only whitespace (and hard-break markers) change
    assert once.count("\n") <= lines.count("\n")


# --- where replies are formatted for each platform ---------------------------------------------

WRAPPED = "Refunds take **5–10 business days**\nonce approved.\n\n- one\n- two\n\n```\na\nb\n```"


def test_slack_mrkdwn_reflows_paragraphs_and_keeps_lists_and_code():
    assert to_mrkdwn(WRAPPED) == (
        "Refunds take *5–10 business days* once approved.\n\n• one\n• two\n\n```\na\nb\n```")


def test_telegram_html_reflows_paragraphs_and_keeps_lists_and_code():
    assert markdown_to_html(WRAPPED) == (
        "Refunds take <b>5–10 business days</b> once approved.\n\n- one\n- two\n\n"
        "<pre>a\nb</pre>")


async def test_a_hard_wrapped_faq_answer_reaches_telegram_as_one_paragraph(tmp_path):
    """The shipped FAQ is written with hard wraps; the customer gets flowing text."""
    with FakeTelegram(poll_wait=0.2) as fake:
        settings = Settings(_env_file=None, data_dir=tmp_path, telegram_bot_token=fake.token,
                            telegram_api_url=fake.url)
        engine = await Engine.open(settings)
        adapter = TelegramAdapter(engine, settings)
        await adapter.start()
        try:
            fake.push(fake.private_message("How long do refunds take?"))
            [text] = await fake.wait_for(lambda: fake.texts(CUSTOMER))
        finally:
            await adapter.stop()
            await engine.aclose()
    assert "take 5–10 business days to appear on your statement once approved." in text
    assert "\n" not in text
