"""The pages: search, conversation, timeline, conversation list, ingestion status.

Each handler is a plain function (Starlette runs it in a worker thread: the store's reads block). A
request made by htmx (``HX-Request``) gets only the part of the page it replaces, and the address of the
whole page to put in the address bar (``HX-Push-Url``), so that a reload or a shared link shows the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from ..errors import SparkyError, StoreError
from ..search import MODES, Filters, parse_when
from . import chart as timeline
from .exchanges import exchanges
from .memory import Memory
from ..stores.reads import SORTS, StoredMessage
from .render import markdown
from .status import current_status

RESULTS = 10  # results per search; "more" asks for this many again
MOST_RESULTS = 100
LISTED = 50  # conversations per page of the list
PERIOD_LISTED = 500  # conversations listed for one period of the timeline
ROLES = ("user", "assistant")
SOURCES = ("chatgpt", "claude")


@dataclass(frozen=True)
class SearchForm:
    """What the search page was asked, as typed (empty strings for what was not)."""

    q: str = ""
    role: str = ""
    source: str = ""
    since: str = ""
    until: str = ""
    conversation: str = ""
    mode: str = "hybrid"
    k: int = RESULTS

    @classmethod
    def read(cls, params: QueryParams) -> "SearchForm":
        """The form from a query string; values outside the choices are dropped."""
        def choice(name: str, choices: tuple[str, ...], default: str = "") -> str:
            value = params.get(name, "")
            return value if value in choices else default

        try:
            k = min(max(int(params.get("k", RESULTS)), 1), MOST_RESULTS)
        except ValueError:
            k = RESULTS
        return cls(params.get("q", "").strip(), choice("role", ROLES), choice("source", SOURCES),
                   params.get("since", "").strip(), params.get("until", "").strip(),
                   params.get("conversation", "").strip(), choice("mode", MODES, "hybrid"), k)

    def filters(self) -> Filters:
        """The search filters (SearchError for a date that is not one)."""
        return Filters(self.role or None, self.conversation or None, self.source or None,
                       parse_when(self.since) if self.since else None,
                       parse_when(self.until, end=True) if self.until else None)

    def query_string(self, **changes: Any) -> str:
        """The page's query string with ``changes``, leaving out what is empty or the default."""
        values = {**asdict(self), **changes}
        defaults = asdict(SearchForm())
        return urlencode([(name, value) for name, value in values.items() if value and value != defaults[name]])


class Pages:
    """The handlers over one memory and one progress file."""

    def __init__(self, memory: Memory, progress_file: Path, templates: Jinja2Templates) -> None:
        self.memory = memory
        self.progress_file = progress_file
        self.templates = templates

    def _page(self, request: Request, name: str, context: dict[str, Any], status: int = 200,
              push: str | None = None) -> Response:
        """``name`` whole, or only its part ``_<name>`` for an htmx request (with the address to show)."""
        partial = "HX-Request" in request.headers and "HX-History-Restore-Request" not in request.headers
        headers = {"Vary": "HX-Request"}
        if partial and push is not None:
            headers["HX-Push-Url"] = push
        return self.templates.TemplateResponse(request, f"_{name}" if partial else name, context, status, headers)

    def search(self, request: Request) -> Response:
        form = SearchForm.read(request.query_params)
        found = problem = more = None
        if form.q:
            try:
                filters = form.filters()
                with self.memory.searching() as searcher:
                    results = searcher.search(form.q, k=form.k, mode=form.mode, filters=filters)
                found = exchanges(results)
                if results and len(results) >= form.k and form.k < MOST_RESULTS:  # there may be more
                    more = form.query_string(k=min(form.k + RESULTS, MOST_RESULTS))
            except SparkyError as exc:
                problem = str(exc)
        query = form.query_string()
        return self._page(request, "search.html", {
            "form": form, "exchanges": found, "problem": problem, "roles": ROLES, "sources": SOURCES,
            "modes": MODES, "back": query, "more": more,
        }, push="/?" + query if query else "/")

    def conversation(self, request: Request) -> Response:
        params = request.query_params
        source, conversation_id = params.get("source", ""), params.get("id", "")
        hit = _integer(params.get("hit"))
        try:
            with self.memory.reading() as reads:
                summary = reads.conversation(source, conversation_id)
                messages = reads.transcript(summary.row) if summary is not None else []
        except StoreError as exc:
            return self._problem(request, str(exc))
        if summary is None:
            return self._problem(request, f"The memory holds no {source} conversation with the id {conversation_id!r}.",
                                 404)
        return self.templates.TemplateResponse(request, "conversation.html", {
            "conversation": summary, "items": _transcript(messages, hit), "hit": hit,
            "back": params.get("back", ""),
        })

    def timeline(self, request: Request) -> Response:
        params = request.query_params
        by = params.get("by") if params.get("by") in timeline.GRANULARITIES else "month"
        chosen = timeline.period_named(params.get("period", ""), by)
        try:
            with self.memory.reading() as reads:
                counts = reads.day_counts()
                listed = reads.conversations(sort="oldest", limit=PERIOD_LISTED, since=chosen.bounds[0],
                                             until=chosen.bounds[1]) if chosen else None
        except StoreError as exc:
            return self._problem(request, str(exc))
        found = timeline.periods(counts, by)
        if chosen is not None:
            chosen = next((period for period in found if period.name == chosen.name), chosen)
        return self.templates.TemplateResponse(request, "timeline.html", {
            "by": by, "chart": timeline.chart(found), "chosen": chosen, "listed": listed, "counts": counts,
            "granularities": timeline.GRANULARITIES,
        })

    def conversations(self, request: Request) -> Response:
        params = request.query_params
        title = params.get("title", "").strip()
        sort = params.get("sort") if params.get("sort") in SORTS else "newest"
        page = max(_integer(params.get("page")) or 1, 1)
        try:
            with self.memory.reading() as reads:
                listed = reads.conversations(title or None, sort, LISTED, (page - 1) * LISTED)
        except StoreError as exc:
            return self._problem(request, str(exc))
        query = {"title": title, "sort": sort if sort != "newest" else ""}
        return self._page(request, "conversations.html", {
            "listed": listed, "title": title, "sort": sort, "sorts": SORTS, "page": page,
            "pages": max(-(-listed.total // LISTED), 1), "query": urlencode([kv for kv in query.items() if kv[1]]),
        }, push="/conversations?" + urlencode([(name, value) for name, value in
                                               {**query, "page": page if page > 1 else ""}.items() if value]))

    def status(self, request: Request) -> Response:
        return self._page(request, "status.html", {"status": current_status(self.progress_file, self.memory)})

    def _problem(self, request: Request, text: str, status: int = 503) -> Response:
        return self.templates.TemplateResponse(request, "problem.html", {"problem": text}, status)


@dataclass(frozen=True)
class Gap:
    """Parts of the conversation the memory left out between two stored messages."""

    count: int


@dataclass(frozen=True)
class Shown:
    """A stored message as the transcript shows it."""

    message: StoredMessage
    html: Any
    hit: bool


def _transcript(messages: list[StoredMessage], hit: int | None) -> list[Gap | Shown]:
    """The messages rendered, with a gap wherever positions were left out (before, between, not after:
    what followed the last stored message is not known)."""
    items: list[Gap | Shown] = []
    expected = 0
    for message in messages:
        if message.position > expected:
            items.append(Gap(message.position - expected))
        items.append(Shown(message, markdown(message.text), message.position == hit))
        expected = message.position + 1
    return items


def _integer(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def when(epoch: float | None) -> str:
    """A date as the pages show it: ``2024-03-05 14:02 UTC``, or ``undated``."""
    if epoch is None:
        return "undated"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def checkpoint(stamp: str | None) -> str:
    """A progress file's ``last_updated`` (local ISO time) to the second, or ``not yet written``."""
    if not stamp:
        return "not yet written"
    try:
        return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return stamp


def day(epoch: float | None) -> str:
    """A date as ``2024-03-05`` (UTC), or ``undated``."""
    return when(epoch)[:10] if epoch is not None else "undated"

