"""Handing threads to humans: handoff rules, the LLM's marker, business hours.

The state machine (bot → waiting → human) lives in the engine; this package only decides
*whether* a message asks for a person and *when* staff are around. Modules by job:
``normalize`` (the text form rules compare in), ``patterns`` (the phrase language),
``rules_file`` (package defaults + project override, problems as file:line), ``detector``
(the decision and its explanation), ``marker`` (the LLM's ``[[HANDOFF]]`` fallback).
"""

from supportbot.handoff.detector import Detection, HandoffDetector
from supportbot.handoff.hours import BusinessHours
from supportbot.handoff.marker import HANDOFF_MARKER, MarkerStreamFilter, llm_handoff, split_marker
from supportbot.handoff.normalize import normalize
from supportbot.handoff.rules_file import check_phrases, default_rules_path

__all__ = [
    "HANDOFF_MARKER",
    "BusinessHours",
    "Detection",
    "HandoffDetector",
    "MarkerStreamFilter",
    "check_phrases",
    "default_rules_path",
    "llm_handoff",
    "normalize",
    "split_marker",
]
