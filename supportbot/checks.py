"""``supportbot check``: everything staff can break, reported as ``file:line: message``."""

from __future__ import annotations

from pathlib import Path

from supportbot.config import Settings
from supportbot.problems import Problem

ENV = "environment"


def config_problems(settings: Settings) -> list[Problem]:
    """Settings that parse but cannot work together. Never echoes a secret's value."""
    problems: list[Problem] = []

    def need(condition: bool, message: str) -> None:
        if not condition:
            problems.append(Problem(ENV, 0, message))

    if settings.llm_configured:
        need(settings.llm_base_url.startswith(("http://", "https://")),  # type: ignore[union-attr]
             "SUPPORTBOT_LLM_BASE_URL must start with http:// or https://")
        need(bool(settings.llm_model), "SUPPORTBOT_LLM_MODEL is empty")
    elif settings.llm_api_key is not None:
        problems.append(Problem(ENV, 0, "SUPPORTBOT_LLM_API_KEY is set but SUPPORTBOT_LLM_BASE_URL"
                                " is not (use https://api.openai.com/v1 for OpenAI)"))
    if settings.slack_configured:
        need(settings.slack_signing_secret is not None or settings.slack_app_token is not None,
             "Slack needs SUPPORTBOT_SLACK_SIGNING_SECRET (HTTP mode) or "
             "SUPPORTBOT_SLACK_APP_TOKEN (Socket Mode)")
    if settings.telegram_webhook_url:
        need(settings.telegram_webhook_secret is not None,
             "SUPPORTBOT_TELEGRAM_WEBHOOK_URL is set without SUPPORTBOT_TELEGRAM_WEBHOOK_SECRET")
    need(0.0 <= settings.faq_confidence <= 1.0, "SUPPORTBOT_FAQ_CONFIDENCE must be in [0, 1]")
    try:
        from supportbot.handoff import BusinessHours

        BusinessHours.parse(settings.business_hours, settings.timezone)
    except ValueError as exc:
        problems.append(Problem(ENV, 0, f"SUPPORTBOT_BUSINESS_HOURS: {exc}"))
    return problems


def run_checks(settings: Settings) -> tuple[list[Problem], str]:
    from supportbot.handoff import check_phrases
    from supportbot.knowledge import check_knowledge
    from supportbot.prompts import PromptLibrary

    problems = config_problems(settings)
    prompts_dir = Path(settings.prompts_dir)
    knowledge_dir = Path(settings.knowledge_dir)
    if not prompts_dir.is_dir():
        problems.append(Problem(prompts_dir, 0, "prompts folder not found"))
    else:
        problems.extend(PromptLibrary(prompts_dir).check())
        phrases = prompts_dir / "handoff_phrases.yaml"
        if phrases.exists():
            problems.extend(check_phrases(phrases))
    if not knowledge_dir.is_dir():
        problems.append(Problem(knowledge_dir, 0, "knowledge folder not found"))
    else:
        problems.extend(check_knowledge(knowledge_dir))
    templates = len(list(prompts_dir.rglob("*.j2"))) if prompts_dir.is_dir() else 0
    files = sum(1 for p in knowledge_dir.rglob("*") if p.is_file()) if knowledge_dir.is_dir() else 0
    summary = (
        f"OK: {templates} prompt template(s) in {prompts_dir}, {files} knowledge file(s) in "
        f"{knowledge_dir}; LLM {'configured' if settings.llm_configured else 'off (FAQ only)'}; "
        f"Slack {'on' if settings.slack_configured else 'off'}; "
        f"Telegram {'on' if settings.telegram_configured else 'off'}."
    )
    return problems, summary
