"""``sparky web``: a local, read-only web page to browse the memory (search, conversations, timeline and
ingestion status), served by Starlette with Jinja2 templates and a vendored htmx; see docs/web.md."""

from .app import WebConfig, create_app

__all__ = ["WebConfig", "create_app"]
