"""Handing threads to humans: phrase triggers, the LLM's marker, business hours.

The state machine (bot → waiting → human) lives in the engine; this package only decides
*whether* a message asks for a person and *when* staff are around.
"""

from supportbot.handoff.hours import BusinessHours
from supportbot.handoff.triggers import (
    HANDOFF_MARKER,
    Detection,
    HandoffDetector,
    MarkerStreamFilter,
    check_phrases,
    normalize,
    split_marker,
)

__all__ = [
    "HANDOFF_MARKER",
    "BusinessHours",
    "Detection",
    "HandoffDetector",
    "MarkerStreamFilter",
    "check_phrases",
    "normalize",
    "split_marker",
]
