"""An opt-in shared token (ASGI middleware): off unless the server is given one (CATS_MODEL_SERVE_TOKEN).

With a token, every request but `GET /health` must carry it: `Authorization: Bearer TOKEN` from a program, or the
cookie that opening `/?token=TOKEN` once in a browser sets (the page's own requests then carry it). Anything
else is answered 401 before the app reads a byte of its body.
"""

import hmac
import os
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from starlette.responses import JSONResponse, RedirectResponse

from cats_model.errors import UserError

TOKEN_ENV = "CATS_MODEL_SERVE_TOKEN"
COOKIE = "cats_model_token"
OPEN = ("/health",)  # for load balancers and `running_server`: says nothing about the model


MIN_LENGTH = 16


def configured_token() -> str | None:
    """The token of CATS_MODEL_SERVE_TOKEN, None when unset or empty; one line when it is too short to be one."""
    token = os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < MIN_LENGTH:
        raise UserError(
            f"{TOKEN_ENV} holds {len(token)} characters: use {MIN_LENGTH} or more, e.g. the output of "
            "python -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    return token


class TokenCheck:
    def __init__(self, app, token: str):
        self.app, self.token = app, token

    def _matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        scheme, _, bearer = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if self._matches(bearer if scheme.lower() == "bearer" else None) or self._matches(_cookie(headers)):
            return await self.app(scope, receive, send)
        query = parse_qs(scope["query_string"].decode("latin-1")).get("token", [None])[0]
        if scope["path"] == "/" and self._matches(query):  # a browser: remember it, and drop it from the URL
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        else:
            response = JSONResponse(
                {
                    "error": "this server needs its token: send Authorization: Bearer TOKEN, or open "
                    "/?token=TOKEN once in a browser"
                },
                status_code=401,
                headers={"www-authenticate": "Bearer", "connection": "close"},
            )
        await response(scope, receive, send)


def _cookie(headers: dict) -> str | None:
    try:
        morsel = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1")).get(COOKIE)
    except CookieError:
        return None
    return morsel.value if morsel else None
