"""Refuse request bodies above a size before they are read into memory (ASGI middleware)."""

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse


class BodyLimit:
    """A declared Content-Length over `max_bytes` is answered 413 at once, its body unread; a body without one
    (chunked) is counted as it streams in, and reading it fails with 413 once it passes the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def message(self) -> str:
        return f"the request is larger than the {self.max_bytes / 2**20:g} MiB allowed: send fewer or smaller images"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = JSONResponse(
                {"error": self.message()}, status_code=413, headers={"connection": "close"}
            )
            return await response(scope, receive, send)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, self.message())  # answered by the app's handler, as JSON
            return message

        await self.app(scope, counting_receive, send)
