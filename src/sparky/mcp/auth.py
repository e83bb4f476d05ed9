"""Who may use the HTTP server: loopback by default; anywhere else only with ``--allow-remote`` and a bearer
token (``SPARKY_MCP_TOKEN``), checked by the SDK's bearer middleware through ``BearerToken``."""

from __future__ import annotations

import hmac
import ipaddress

from mcp.server.auth.provider import AccessToken

from ..errors import SparkyError

TOKEN_ENV = "SPARKY_MCP_TOKEN"
MIN_TOKEN_LENGTH = 16
CLIENT = "sparky-mcp-client"


class AccessError(SparkyError):
    """The HTTP server cannot start as asked: a remote bind without permission or without a good token."""


class BearerToken:
    """A ``TokenVerifier`` that accepts exactly one token (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token="", client_id=CLIENT, scopes=[])  # the token itself is never kept
        return None

    def __repr__(self) -> str:
        return "BearerToken(***)"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_access(host: str, allow_remote: bool, token: str | None) -> str | None:
    """The token the server must require (None: none), or AccessError when binding ``host`` is not allowed.

    A token that is set is always required, on loopback too."""
    token = token or None
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise AccessError(f"{TOKEN_ENV} is too short: use at least {MIN_TOKEN_LENGTH} characters, e.g. from"
                          " `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    if is_loopback(host):
        return token
    if not allow_remote:
        raise AccessError(f"{host} is not a loopback address: serving off this machine needs --allow-remote"
                          f" and a bearer token in {TOKEN_ENV}")
    if not token:
        raise AccessError(f"--allow-remote needs a bearer token: set {TOKEN_ENV} (clients send it as"
                          " `Authorization: Bearer <token>`)")
    return token
