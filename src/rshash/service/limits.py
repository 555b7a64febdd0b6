"""What keeps one server bounded: request-body size, concurrent heavy work, the host names it answers to."""

from __future__ import annotations

import asyncio
from typing import Iterable

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Host names every server answers to (the Host header, without the port).
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def served_hosts(host: str | None = None, extra: Iterable[str] = ()) -> list[str]:
    """Host names to accept: the loopback names, the listening address and ``extra`` (``"*"``: any).

    A request whose Host header names anything else is refused (400), so a web page on another
    site cannot reach the server through DNS rebinding.
    """
    names = [*LOCAL_HOSTS, *([host] if host else []), *extra]
    out: list[str] = []
    for name in names:
        name = name.strip().lower()
        if ":" in name and not name.startswith("["):  # an IPv6 address appears bracketed in a Host header
            name = f"[{name}]"
        if name and name not in out:
            out.append(name)
    return ["*"] if "*" in out else out


class Slots:
    """At most ``n`` holders at once, for async code (``async with slots():``): one semaphore per event loop."""

    def __init__(self, n: int):
        if n < 1:
            raise ValueError(f"need at least one slot, got {n}")
        self.n = n
        self._current: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def __call__(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        current = self._current
        if current is None or current[0] is not loop:
            current = self._current = (loop, asyncio.Semaphore(self.n))
        return current[1]


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` (413): at once from Content-Length, else as the bytes arrive.

    Bytes are counted before anything buffers them, so an upload over the limit is cut
    off after at most ``max_bytes`` (plus one network chunk), never read whole.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, message: str):
        self.app = app
        self.max_bytes = max_bytes
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the body parser: FastAPI passes HTTPExceptions through to its handler.
                    raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, limited_receive, send)
