"""``sparky web``: serve the memory as a local web page (read-only; loopback unless told otherwise)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import click

from .options import db_option, friendly_errors, progress_file_option, store_url
from ..errors import SparkyError
from ..stores import redact

TOKEN_ENV = "SPARKY_WEB_TOKEN"


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --allow-remote and a token.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--allow-remote", is_flag=True,
              help=f"Allow listening beyond loopback; every request must then carry the token in ${TOKEN_ENV}.")
@click.option("--embedder", help="Embedding model for queries (default: the one the store was built with).")
@progress_file_option
@db_option
@friendly_errors
def web_command(host: str, port: int, allow_remote: bool, embedder: str | None, progress_file: Path,
                db: str | None) -> None:
    """Browse the memory in a local web page: search, read conversations, see the timeline, watch an ingestion."""
    import uvicorn

    from ..web import WebConfig, create_app

    token = os.environ.get(TOKEN_ENV) or None
    loopback = is_loopback(host)
    if not loopback and not allow_remote:
        raise click.UsageError(f"{host} is not a loopback address: the memory would be open to the network; "
                               f"pass --allow-remote and set {TOKEN_ENV}")
    if not loopback and token is None:
        raise click.UsageError(f"--allow-remote needs a token: set {TOKEN_ENV} to a long random secret")
    url = store_url(db, progress_file)
    listener = listen(host, port)
    app = create_app(WebConfig(url, progress_file, embedder, token, loopback_only=loopback))
    bound = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"Sparky web: http://{shown}:{bound}/ (memory {redact(url)}; Ctrl+C to stop)")
    if token is not None:
        click.echo(f"Open it once with ?token=<the value of {TOKEN_ENV}> (the browser then keeps it in a cookie).")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    server.run(sockets=[listener])


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: ``localhost`` or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``: requests wait in its queue until the server takes them, so the
    address printed after this answers (a refused port is a one-line error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise SparkyError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return listener
