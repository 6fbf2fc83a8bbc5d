"""``supportbot check``: everything staff can break, reported as ``file:line: message``."""

from __future__ import annotations

from pathlib import Path

from supportbot import defaults
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


def database_problems(settings: Settings) -> list[Problem]:
    """A PostgreSQL server that does not answer, found before ``serve`` does. (SQLite is a file
    that ``serve`` creates: probing it here would create it as a side effect.)"""
    import asyncio

    from supportbot.database_url import unreachable

    url = settings.resolved_database_url
    if not url.startswith("postgresql"):
        return []
    problem = asyncio.run(unreachable(url, settings.database_setting, seconds=10))
    return [] if problem is None else [Problem(ENV, 0, problem)]


def files_in_use(settings: Settings) -> list[str]:
    """One line per file group the bot reads: the package default or the staff override."""
    from supportbot.handoff.model import model_path
    from supportbot.prompts import PromptLibrary

    library = PromptLibrary(settings.prompts_dir)
    overrides = library.overrides()
    if defaults.is_default_dir(settings.prompts_dir):
        prompts = f"prompts: package defaults ({defaults.PROMPTS})"
    else:
        prompts = (f"prompts: {settings.prompts_dir} over the package defaults; overrides: "
                   + (", ".join(overrides) if overrides else "none"))
    if defaults.is_default_dir(settings.knowledge_dir):
        knowledge = f"knowledge: the package's example FAQ ({defaults.KNOWLEDGE})"
    else:
        knowledge = f"knowledge: {settings.knowledge_dir} (override)"
    weights = model_path(settings.handoff_model)
    model = f"handoff model: {weights}" if weights is not None else "handoff model: off"
    return [prompts, knowledge, model]


def run_checks(settings: Settings) -> tuple[list[Problem], str]:
    from supportbot.handoff import check_phrases
    from supportbot.handoff.model import HandoffModel, model_path
    from supportbot.knowledge import check_knowledge
    from supportbot.prompts import PromptLibrary

    problems = config_problems(settings)
    problems.extend(database_problems(settings))
    knowledge_dir = Path(settings.knowledge_dir)
    library = PromptLibrary(settings.prompts_dir)
    problems.extend(library.check())
    phrases = defaults.resolve(settings.prompts_dir, "handoff_phrases.yaml")
    if phrases.path.exists():
        problems.extend(check_phrases(phrases.path))
    weights = model_path(settings.handoff_model)
    if weights is not None:
        try:
            HandoffModel.load(weights)
        except ValueError as exc:
            problems.append(Problem(weights, 0, str(exc).removeprefix(f"{weights}: ")))
    from supportbot.prompts.suggested import check_suggested_prompts

    problems.extend(check_suggested_prompts(settings.prompts_dir))
    problems.extend(check_knowledge(knowledge_dir))
    templates = sum(1 for name, _ in library.files_in_use() if name.endswith(".j2"))
    files = sum(1 for p in knowledge_dir.rglob("*") if p.is_file())
    summary = "\n".join([
        f"OK: {templates} prompt template(s), {files} knowledge file(s); "
        f"LLM {'configured' if settings.llm_configured else 'off (FAQ only)'}; "
        f"Slack {'on' if settings.slack_configured else 'off'}; "
        f"Telegram {'on' if settings.telegram_configured else 'off'}.",
        *files_in_use(settings),
    ])
    return problems, summary
