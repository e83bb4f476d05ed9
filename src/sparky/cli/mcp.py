"""``sparky mcp``: serve the memory to assistants over the Model Context Protocol (stdio, or HTTP)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import SparkyError
from ..mcp.budget import DEFAULT_BUDGET
from .options import db_option, friendly_errors, progress_file_option, store_url


@click.command("mcp", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--http", "address", metavar="HOST:PORT",
              help="Serve streamable HTTP at this address (e.g. 127.0.0.1:8765; port 0 picks one) instead of stdio.")
@click.option("--allow-remote", is_flag=True,
              help="Let --http bind off loopback; clients must then send the bearer token in SPARKY_MCP_TOKEN.")
@click.option("--budget", default=DEFAULT_BUDGET, show_default=True, type=click.IntRange(500, 100_000),
              help="Most tokens (estimated) in one tool answer; longer answers are paged.")
@click.option("--embedder", help="Embedding model for queries (default: the one the store was built with).")
@click.option("--verbose", "-v", is_flag=True, help="Log each call's arguments (query texts included) to stderr.")
@progress_file_option
@db_option
@friendly_errors
def mcp_command(address: str | None, allow_remote: bool, budget: int, embedder: str | None, verbose: bool,
                progress_file: Path, db: str | None) -> None:
    """Serve the memory to assistants (Claude Desktop, Claude Code, Cursor...) as MCP tools: read-only."""
    try:
        from ..mcp import auth, server
        from ..mcp.tools import MemoryTools
    except ImportError as exc:
        raise SparkyError(f"the MCP server needs the mcp package ({exc.name} is missing):"
                          " pip install 'sparky-memory[mcp]'") from None
    server.configure_logging(verbose)
    if address is not None:
        host, port = parse_address(address)
        token = auth.check_access(host, allow_remote, os.environ.get(auth.TOKEN_ENV))
    tools = MemoryTools(store_url(db, progress_file), embedder, budget)
    try:
        if address is None:
            tools.warm()
            server.serve_stdio(server.MemoryServer(tools))
            return
        with server.bind(host, port) as listener:
            tools.warm()
            memory = server.MemoryServer(tools, token, server.http_url(listener) if token else None)
            server.serve_http(memory, listener, auth.is_loopback(host))
    finally:
        tools.close()

def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a host and a port."""
    host, colon, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{text!r}: give HOST:PORT, e.g. 127.0.0.1:8765", param_hint="--http")
    return host, int(port)
