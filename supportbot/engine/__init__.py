"""The conversation engine shared by every platform adapter."""

from supportbot.engine.engine import Engine
from supportbot.engine.types import (
    Accepted,
    ConversationView,
    IncomingMessage,
    Intake,
    Outcome,
    Reply,
    ReplySink,
    Source,
    StaffDesk,
    StaffWrote,
    Status,
    TurnView,
)

__all__ = [
    "Accepted",
    "ConversationView",
    "Engine",
    "IncomingMessage",
    "Intake",
    "Outcome",
    "Reply",
    "ReplySink",
    "Source",
    "StaffDesk",
    "StaffWrote",
    "Status",
    "TurnView",
]
