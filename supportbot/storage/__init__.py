"""Persistence: SQLAlchemy 2.0 models, Alembic migrations and the :class:`Store`."""

from supportbot.storage.store import Store

__all__ = ["Store"]
