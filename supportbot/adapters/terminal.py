"""The terminal chat: platform ``cli``, one customer message per line from a TTY or a pipe."""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import sys
import uuid
from collections.abc import AsyncIterator
from typing import TextIO

from supportbot.engine import Engine, IncomingMessage, Reply
from supportbot.storage import reports
from supportbot.textflow import reflow

PLATFORM = "cli"
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")


def plain(text: str, *, tty: bool) -> str:
    """FAQ answers are Markdown; a terminal shows bold as bold (or drops the asterisks) and
    paragraphs as one line each, wrapped by the terminal at its own width."""
    text = reflow(text)
    return _BOLD.sub(lambda m: f"\033[1m{m[1] or m[2]}\033[0m" if tty else (m[1] or m[2]),
                     text)


class TerminalSink:
    """Prints replies; streams them as they are generated when a person is watching."""

    def __init__(self, name: str, out: TextIO) -> None:
        self.name = name
        self.out = out

    async def send(self, text: str, *, feedback_id: int | None = None) -> str | None:
        """Print the reply; the terminal has no rating buttons, so ``feedback_id`` is unused."""
        self.out.write(f"{self.name}: {plain(text, tty=self.out.isatty())}\n")
        self.out.flush()
        return None

    async def send_stream(self, chunks: AsyncIterator[str]) -> str | None:
        self.out.write(f"{self.name}: ")
        async for chunk in chunks:
            self.out.write(chunk)
            self.out.flush()
        self.out.write("\n")
        self.out.flush()
        return None


def reply_json(reply: Reply) -> str:
    return json.dumps(
        {
            "conversation_id": reply.conversation_id,
            "reply": reply.text,
            "outcome": str(reply.outcome),
            "sources": [
                {"id": s.id, "title": s.title, "url": s.url, "score": s.score}
                for s in reply.sources
            ],
            "handed_off": reply.handed_off,
            "message_id": reply.message_id,
        },
        ensure_ascii=False,
    )


async def run_chat(
    engine: Engine,
    *,
    thread: str,
    customer: str | None = None,
    as_json: bool = False,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    customer = customer or _whoami()
    interactive = stdin.isatty() and not as_json
    sink = None if as_json else TerminalSink(engine.settings.bot_name, stdout)
    if interactive:
        stdout.write(
            f"{engine.settings.bot_name} from {engine.settings.company_name}. Type a question; "
            "/human for a person, /new to start over, /feedback good|bad [comment] on the last "
            "answer, /quit to leave.\n"
        )
    while True:
        if interactive:
            stdout.write("you> ")
            stdout.flush()
        line = await asyncio.to_thread(stdin.readline)
        if not line:
            break
        text = line.rstrip("\n")
        command = text.strip().lower()
        if command in ("/quit", "/exit"):
            break
        if command == "/new":
            await engine.new_conversation(PLATFORM, thread, f"customer:{customer}")
            if sink:
                await sink.send(engine.prompts.message("new_conversation"))
            continue
        if command == "/feedback" or command.startswith("/feedback "):
            result = await record_feedback(engine, thread, customer, text.strip()[9:])
            if as_json:
                stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
            elif sink:
                await sink.send(result["text"])
            else:
                stdout.write(result["text"] + "\n")
            stdout.flush()
            continue
        if command == "/human":
            view = await engine.request_handoff(
                PLATFORM, thread, customer, "command:/human", f"customer:{customer}", sink=sink,
                customer_name=customer,
            )
            if as_json:
                stdout.write(json.dumps({"conversation_id": view.id, "handed_off": True,
                                         "status": str(view.status)}) + "\n")
            continue
        reply = await engine.handle(
            IncomingMessage(
                platform=PLATFORM,
                thread_key=thread,
                customer_id=customer,
                customer_name=customer,
                text=text,
                message_id=uuid.uuid4().hex,
            ),
            sink,
        )
        if as_json:
            stdout.write(reply_json(reply) + "\n")
            stdout.flush()
    return 0


VOTES = {"good": True, "yes": True, "+1": True, "bad": False, "no": False, "-1": False}


async def record_feedback(engine: Engine, thread: str, customer: str, args: str) -> dict:
    """``/feedback good|bad [comment]``: rate the last bot answer in this thread."""
    vote, _, comment = args.strip().partition(" ")
    helpful = VOTES.get(vote.lower())
    if helpful is None:
        return {"feedback": False, "text": "Usage: /feedback good|bad [comment]"}
    view = await engine.find_conversation(PLATFORM, thread)
    message_id = await reports.last_answer_id(engine.store, view.id) if view else None
    if message_id is None:
        return {"feedback": False, "text": "There is no answer to rate yet."}
    ok = await engine.record_feedback(message_id, helpful, f"{PLATFORM}:{customer}",
                                      comment.strip() or None)
    words = engine.prompts.message("feedback_thanks", view.language) if ok else "Not recorded."
    return {"feedback": ok, "message_id": message_id, "helpful": helpful, "text": words}


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "customer"
