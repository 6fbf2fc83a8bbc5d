"""Structured logging: JSON lines when not on a terminal, every line carries the conversation id,
and no secret value ever reaches the output.

Secrets are masked twice: :class:`ContextFilter` masks the record (message, extras, the
formatted traceback and stack), and the handler :func:`setup` installs masks the final line, so
a secret echoed by a server into an exception message, a URL in a chained traceback or a value
nested in an extra dict cannot slip through. Uncaught exceptions (main thread and other
threads) go through the same handler instead of straight to stderr.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import TracebackType
from urllib.parse import quote, quote_plus

conversation_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "conversation_id", default=None
)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


_MIN_SECRET = 4  # shorter values would mask ordinary words
_TRACEBACKS = logging.Formatter()


class Masker:
    """Replaces every secret with ``***``, also in the forms it takes inside URLs (percent- or
    plus-encoded), JSON and ``repr`` strings, and the secret half of a Telegram token
    (``<bot id>:<secret>``), which is a credential on its own."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) < _MIN_SECRET:
                continue
            forms |= {secret, quote(secret, safe=""), quote_plus(secret),
                      json.dumps(secret)[1:-1], repr(secret)[1:-1]}
            head, colon, tail = secret.partition(":")
            if colon and head.isdigit() and len(tail) >= 8:
                forms.add(tail)
        ordered = sorted((f for f in forms if len(f) >= _MIN_SECRET), key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self.pattern is not None

    def __call__(self, text: str) -> str:
        return self.pattern.sub("***", text) if self.pattern is not None else text


class ContextFilter(logging.Filter):
    """Adds the conversation id and masks secrets in the message, the extras (nested values
    too), the formatted traceback and the stack."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.mask = Masker(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "conversation_id", None) is None:
            record.conversation_id = conversation_id.get()
        if not self.mask:
            return True
        message = record.getMessage()
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        for key, value in list(record.__dict__.items()):
            if key in _STANDARD or value is None or isinstance(value, int | float | bool):
                continue
            text = value if isinstance(value, str) else str(value)
            if (clean := self.mask(text)) != text:
                setattr(record, key, clean)
        if record.exc_info and not record.exc_text:
            # formatted once here, masked, and cached where every Formatter looks for it
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


class MaskingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler whose every formatted line is masked, whatever the formatter did."""

    def __init__(self, stream: object, mask: Masker) -> None:
        super().__init__(stream)  # type: ignore[arg-type]
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        return self.mask(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None:
                data[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {
            k: v for k, v in record.__dict__.items() if k not in _STANDARD and v is not None
        }
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def setup(level: str = "INFO", fmt: str = "auto", secrets: Iterable[str] = (),
          stream=None) -> None:  # type: ignore[no-untyped-def]
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    secrets = list(secrets)
    handler = MaskingHandler(stream, Masker(secrets))
    handler.setFormatter(
        JsonFormatter()
        if use_json
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(ContextFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "aiosqlite", "alembic", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _route_uncaught_exceptions()


_uncaught = logging.getLogger("supportbot.uncaught")


def _log_uncaught(kind: type[BaseException], exc: BaseException,
                  tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    _uncaught.critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    thread = args.thread.name if args.thread is not None else "?"
    _uncaught.error("uncaught exception in thread %s", thread,
                    exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def _route_uncaught_exceptions() -> None:
    """Tracebacks Python would print straight to stderr go through the masking handler."""
    hook: Callable[..., None] = _log_uncaught
    sys.excepthook = hook
    threading.excepthook = _log_thread_exception
