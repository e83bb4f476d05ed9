"""What every response carries, and who may ask: a strict Content-Security-Policy, the token when one is
set, and on loopback only requests addressed to loopback (a page elsewhere cannot reach the memory by
rebinding its own host name to 127.0.0.1).

The token (``SPARKY_WEB_TOKEN``) comes as ``Authorization: Bearer <token>``, or once as ``?token=<token>``
in the address: that answer sets an HTTP-only, same-site cookie and sends the browser to the same address
without it, so the token does not stay in the address bar or the history.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlencode

from starlette.datastructures import URL, Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
       " form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
COOKIE = "sparky_web_token"


class Guard:
    """ASGI middleware: the host check, the token check, then the security headers on every answer."""

    def __init__(self, app: ASGIApp, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope) -> Response | None:
        """The answer to a request that may not go on, else None."""
        headers = Headers(scope=scope)
        if self.loopback_only and _host_name(headers.get("host", "")) not in LOOPBACK_HOSTS:
            return PlainTextResponse("This server answers requests to 127.0.0.1 or localhost only.", 421)
        if self.token is None:
            return None
        request = Request(scope)
        given = request.query_params.get("token")
        if given is not None and _same(given, self.token):
            kept = [(name, value) for name, value in request.query_params.multi_items() if name != "token"]
            target = URL(scope=scope).replace(query=urlencode(kept))
            answer = RedirectResponse(f"{target.path}{'?' + target.query if target.query else ''}", 303)
            answer.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return answer
        bearer = headers.get("authorization", "")
        if bearer.startswith("Bearer ") and _same(bearer.removeprefix("Bearer "), self.token):
            return None
        cookie = request.cookies.get(COOKIE)
        if cookie is not None and _same(cookie, self.token):
            return None
        return PlainTextResponse("A token is needed: open this address with ?token=<SPARKY_WEB_TOKEN>, "
                                 "or send Authorization: Bearer <token>.", 401,
                                 headers={"WWW-Authenticate": "Bearer"})


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def _host_name(host: str) -> str:
    """The name in a Host header, without its port (``[::1]:8765`` -> ``::1``)."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
