"""supportbot: a customer-support chatbot for Slack and Telegram.

Layout, from the outside in:

- ``supportbot.cli`` (click commands, ``python -m supportbot``) and ``supportbot.server`` (the
  Starlette app of ``supportbot serve``: ``/healthz``, ``/metrics`` and the adapters' routes);
- ``supportbot.adapters``: the platform doors (``slack/``, ``telegram/``, the terminal chat),
  each an ``adapters.base.Adapter`` that turns platform events into engine calls and engine
  replies into platform API calls;
- ``supportbot.engine``: the workflow of a customer message (store it, answer from the FAQ or
  the LLM, hand over to staff), with its public types in ``engine.types``;
- the engine's parts: ``storage`` (SQLAlchemy 2.0 asyncio models, Alembic migrations, ``Store``),
  ``knowledge`` (FAQ loading and retrieval), ``llm`` (OpenAI-compatible client), ``prompts``
  (Jinja prompts and the bot's own words), ``handoff`` (when a person should take over);
- ``supportbot.config`` (``Settings`` from ``SUPPORTBOT_*`` variables) and
  ``supportbot.testing`` (loopback fakes of the LLM, Slack and Telegram, for our tests and yours).

The core never imports an adapter or a platform SDK, and only the entry point imports the CLI:
``[tool.importlinter]`` in ``pyproject.toml``, checked by ``tests/test_architecture.py``.
"""
