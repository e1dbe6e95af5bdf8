"""Refuse requests whose headers or body are over a size, or whose body stops arriving (ASGI middleware)."""

import asyncio

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

MAX_HEAD_BYTES = (
    16 * 1024
)  # a request's headers: a browser's are a few hundred bytes, a 64 MiB one is an attack


def head_too_large(max_head_bytes: int) -> str:
    return f"the request's headers are larger than the {max_head_bytes // 1024} KiB allowed"


class BodyLimit:
    """Headers over `max_head_bytes` are answered 431. A declared Content-Length over `max_bytes` is answered 413 at once, its body unread; a body without one
    (chunked) is counted as it streams in, and reading it fails with 413 once it passes the limit. A body that
    stops arriving for `idle_s` is answered 408: a half-sent request holds no connection for long."""

    def __init__(self, app, max_bytes: int, idle_s: float = 30.0, max_head_bytes: int = MAX_HEAD_BYTES):
        self.app, self.max_bytes, self.idle_s, self.max_head_bytes = app, max_bytes, idle_s, max_head_bytes

    def message(self) -> str:
        return f"the request is larger than the {self.max_bytes / 2**20:g} MiB allowed: send fewer or smaller images"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        head = sum(len(name) + len(value) + 4 for name, value in scope["headers"])  # "name: value\r\n"
        if head > self.max_head_bytes:  # the HTTP server may have taken more in one read of the socket
            response = JSONResponse(
                {"error": head_too_large(self.max_head_bytes)},
                status_code=431,
                headers={"connection": "close"},
            )
            return await response(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = JSONResponse(
                {"error": self.message()}, status_code=413, headers={"connection": "close"}
            )
            return await response(scope, receive, send)
        seen, complete = 0, False

        async def counting_receive():
            nonlocal seen, complete
            if complete:  # what follows the body is a disconnect, however late: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.idle_s)
            except asyncio.TimeoutError:
                raise HTTPException(
                    408, f"the request body stopped arriving for {self.idle_s:g} s: send it again, whole"
                ) from None
            complete = not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, self.message())  # answered by the app's handler, as JSON
            return message

        await self.app(scope, counting_receive, send)
