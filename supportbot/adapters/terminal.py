"""The terminal chat: platform ``cli``, one customer message per line from a TTY or a pipe."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
import uuid
from collections.abc import AsyncIterator
from typing import TextIO

from supportbot.engine import Engine, IncomingMessage, Reply

PLATFORM = "cli"


class TerminalSink:
    """Prints replies; streams them as they are generated when a person is watching."""

    def __init__(self, name: str, out: TextIO) -> None:
        self.name = name
        self.out = out

    async def send(self, text: str) -> str | None:
        self.out.write(f"{self.name}: {text}\n")
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
            "/human for a person, /new to start over, /quit to leave.\n"
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


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "customer"
