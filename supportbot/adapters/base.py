"""The shape every platform adapter has, so ``supportbot serve`` can run any of them."""

from __future__ import annotations

from typing import Protocol

from starlette.routing import BaseRoute


class Adapter(Protocol):
    name: str

    def routes(self) -> list[BaseRoute]:
        """HTTP routes this adapter serves on ``supportbot serve`` (may be empty)."""
        ...

    async def start(self) -> None:
        """Connect (Socket Mode, long polling, webhook registration); must not block."""
        ...

    async def stop(self) -> None: ...
