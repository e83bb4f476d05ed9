"""How a store records an OpenAI-compatible embedding model, without secrets (no SDK needed to read it).

The recorded name is ``openai:MODEL@URL``, with ``;dimensions=N`` added when vectors were shortened
(``dimensions`` of text-embedding-3-*, below the native width)::

    openai:text-embedding-3-small@https://api.openai.com/v1
    openai:text-embedding-3-large@https://api.openai.com/v1;dimensions=256
    openai:nomic-embed-text@http://localhost:11434/v1

URL is the base URL with any user name and password, query and fragment left out (a key put there never
reaches the store or the progress file), the scheme and host lower-cased, no trailing slash. The host is
part of the name because the same model name on two servers need not give the same vectors; the same
server under another name (localhost vs 127.0.0.1) is, by this rule, another model: use the same URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from ..errors import SparkyError
from .pricing import OPENAI_HOST, OPENAI_MODELS

PREFIX = "openai:"
DEFAULT_BASE_URL = f"https://{OPENAI_HOST}/v1"
_DIMENSIONS = ";dimensions="


@dataclass(frozen=True)
class OpenAISpec:
    """What a recorded name says: the model sent in requests, the base URL, shortened dimensions if any."""

    model: str
    base_url: str
    dimensions: int | None = None

    @property
    def host(self) -> str:
        return display_host(self.base_url)


def clean_url(base_url: str) -> str:
    """The base URL without credentials, query or fragment: what may be shown and recorded."""
    try:
        parts = urlsplit(base_url.strip())
        host = (parts.hostname or "").lower()
    except ValueError:
        raise SparkyError("the --base-url is not a URL (expected something like http://localhost:11434/v1)") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise SparkyError("the --base-url must start with http:// or https:// and name a host "
                          "(like http://localhost:11434/v1)")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        raise SparkyError("the --base-url has an invalid port") from None
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))


def display_host(base_url: str) -> str:
    """``host`` or ``host:port`` of a base URL (never its credentials)."""
    parts = urlsplit(clean_url(base_url))
    return parts.netloc


def recorded_name(model: str, base_url: str, dimensions: int | None = None) -> str:
    """The name a store records for ``model`` at ``base_url``; ``dimensions`` when the request shortens vectors."""
    name = f"{PREFIX}{model}@{clean_url(base_url)}"
    native = OPENAI_MODELS.get(model, (0, None, 0))[1]
    if dimensions is not None and dimensions != native:
        name += f"{_DIMENSIONS}{dimensions}"
    return name


def is_recorded_openai(name: str | None) -> bool:
    """Whether a recorded model name (or an embedder name) is an OpenAI-compatible model's."""
    return bool(name) and name.startswith(PREFIX) and parse_recorded(name) is not None


def parse_recorded(name: str) -> OpenAISpec | None:
    """The spec of a recorded ``openai:MODEL@URL[;dimensions=N]`` name; None for any other name."""
    if not name.startswith(PREFIX) or "@" not in name:
        return None
    body = name[len(PREFIX):]
    dimensions = None
    if _DIMENSIONS in body:
        body, _, width = body.rpartition(_DIMENSIONS)
        if not width.isdigit():
            return None
        dimensions = int(width)
    model, _, url = body.rpartition("@")
    if not model or "://" not in url:
        return None
    return OpenAISpec(model, url, dimensions)
