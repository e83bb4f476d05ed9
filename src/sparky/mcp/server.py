"""The MCP server: the memory's four read-only tools and one resource per conversation, over stdio or
streamable HTTP (the official SDK's ``MCPServer``).

The SDK is pinned (``mcp==2.3.0``): 2.x is the maintained line (``MCPServer``; 1.x's ``FastMCP`` is legacy)
and has streamable HTTP with a token verifier; parts of its API are marked provisional within 2.x (and
``list_resources`` is overridden here), so a new version is taken deliberately, with the tests.

Nothing here logs a token or a query text at INFO: the SDK's own INFO lines (which quote a failing call's
message, and so the caller's words) are raised to WARNING unless ``verbose``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import quote

import anyio
from mcp.server import MCPServer
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp_types import Resource, ToolAnnotations

from ..errors import SparkyError
from ..search import iso_date
from .auth import BearerToken
from .tools import MemoryTools

log = logging.getLogger("sparky.mcp")

NAME = "sparky-memory"
HTTP_PATH = "/mcp"
RESOURCE = "conversation://{id}"
INSTRUCTIONS = (
    "Sparky Memory is the user's long-term memory: their past conversations with AI assistants (ChatGPT,"
    " Claude), imported from their exports. Use search_memory when the user refers to something discussed"
    " before or when their history would help; cite exchanges by conversation and message id, and read more"
    " of a conversation with get_conversation. Everything here is read-only."
)
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


class MemoryServer(MCPServer):
    """An ``MCPServer`` over one memory; with ``token``, every HTTP request must bear it."""

    def __init__(self, tools: MemoryTools, token: str | None = None, url: str | None = None) -> None:
        auth = {} if token is None else {
            "token_verifier": BearerToken(token),
            # a resource server only: no OAuth routes or metadata are served, the token is the whole check
            "auth": AuthSettings(issuer_url=url, resource_server_url=None),
        }
        super().__init__(NAME, title="Sparky Memory", instructions=INSTRUCTIONS, version=_version(),
                         log_level="WARNING", **auth)
        self.tools = tools
        for tool in (tools.search_memory, tools.get_conversation, tools.list_conversations, tools.memory_stats):
            self.add_tool(tool, annotations=READ_ONLY)
        register = self.resource(RESOURCE, name="conversation", title="A conversation from the memory",
                                 description="The whole transcript of one conversation.", mime_type="text/plain")
        register(self.read_conversation)

    def read_conversation(self, id: str) -> str:
        """The ``conversation://{id}`` resource."""
        try:
            return self.tools.conversation_text(id)
        except ToolError as exc:
            raise ResourceNotFoundError(str(exc)) from None

    async def list_resources(self) -> list[Resource]:
        """One resource per conversation, most recent first (read from the store on every listing)."""
        infos = await anyio.to_thread.run_sync(self.tools.conversation_list)
        return [*await super().list_resources(), *(
            Resource(uri=f"conversation://{quote(info.id, safe='')}", name=info.title or info.id,
                     description=f"{info.source} conversation, {_day(info.started)} to {_day(info.last)}",
                     mime_type="text/plain")
            for info in infos)]


def configure_logging(verbose: bool) -> None:
    """Log to stderr (stdout carries the protocol over stdio); ``verbose`` adds each call's arguments."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sparky.mcp").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("mcp").setLevel(logging.INFO if verbose else logging.WARNING)


def serve_stdio(server: MemoryServer) -> None:
    """Answer one client over stdin/stdout until it closes them."""
    log.info("serving %s over stdio", server.tools.store.url)
    anyio.run(server.run_stdio_async)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket at ``host:port`` (port 0: any free port), or one line saying why not."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise SparkyError(f"cannot listen on {host}:{port}: {os.strerror(exc.errno) if exc.errno else exc}") from None


def http_url(listener: socket.socket) -> str:
    """The URL a client connects to at a listening socket."""
    host, port = listener.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}{HTTP_PATH}"


def serve_http(server: MemoryServer, listener: socket.socket, loopback: bool) -> None:
    """Answer clients over streamable HTTP on ``listener`` until SIGINT or SIGTERM."""
    import uvicorn

    host = listener.getsockname()[0]
    app = server.streamable_http_app(streamable_http_path=HTTP_PATH, host=host)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    if not loopback:
        log.warning("serving off this machine over plain HTTP: put a TLS proxy in front when it crosses a network")
    log.info("serving %s at %s", server.tools.store.url, http_url(listener))
    uvicorn.Server(config).run(sockets=[listener])


def _version() -> str:
    try:
        return version("sparky-memory")
    except PackageNotFoundError:
        return ""


def _day(epoch: float | None) -> str:
    return (iso_date(epoch) or "undated")[:10]
