"""The conversation engine shared by every platform adapter."""

from supportbot.engine.engine import Engine
from supportbot.engine.types import (
    ConversationView,
    IncomingMessage,
    Outcome,
    Reply,
    ReplySink,
    Source,
    StaffDesk,
    Status,
    TurnView,
)

__all__ = [
    "ConversationView",
    "Engine",
    "IncomingMessage",
    "Outcome",
    "Reply",
    "ReplySink",
    "Source",
    "StaffDesk",
    "Status",
    "TurnView",
]
