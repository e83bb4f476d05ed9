"""The web application: routes, templates, static files and the guard around them."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .memory import Memory
from .render import code_css
from .security import Guard
from .views import Pages, checkpoint, day, when

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class WebConfig:
    """What the server serves and to whom."""

    store_url: str
    progress_file: Path
    embedder: str | None = None
    token: str | None = None  # required on every request when set
    loopback_only: bool = True  # refuse requests addressed to any other host name


def create_app(config: WebConfig) -> Starlette:
    """The app over the store ``config`` names; the store is opened on first need and closed at shutdown."""
    memory = Memory(config.store_url, config.embedder)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                     undefined=jinja2.StrictUndefined)
    environment.filters.update(when=when, day=day, checkpoint=checkpoint)
    templates = Jinja2Templates(env=environment)
    templates.env.globals["store_url"] = memory.display_url
    pages = Pages(memory, config.progress_file, templates)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        memory.warm_up()
        yield
        memory.close()

    def stylesheet(request: Request) -> Response:
        return Response(code_css(), media_type="text/css")

    def not_found(request: Request, exc: Exception) -> Response:
        return templates.TemplateResponse(request, "problem.html", {"problem": "No such page."}, 404)

    routes = [
        Route("/", pages.search, name="search"),
        Route("/conversation", pages.conversation, name="conversation"),
        Route("/timeline", pages.timeline, name="timeline"),
        Route("/conversations", pages.conversations, name="conversations"),
        Route("/status", pages.status, name="status"),
        Route("/code.css", stylesheet, name="code_css"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found},
                     middleware=[Middleware(Guard, token=config.token, loopback_only=config.loopback_only)])
