"""The tools an assistant calls, over one store: search, read a conversation, list them, and stats.

Every answer stays within the token budget and says how to page on. A failure the caller can fix (a bad
date, an unknown conversation, an empty store) is a ``ToolError``: one line the assistant reads, and the
server carries on. Calls are answered one at a time (the store connection and the searcher's kept
vectors are shared), and the store is only read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from contextlib import contextmanager
from typing import Annotated, Iterator, Literal

from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import Field

from ..errors import SparkyError
from ..embedders import get_embedder
from ..search import ContextMessage, Filters, Searcher, SearchResult, iso_date, open_for_search, parse_when
from ..stores import Store
from ..stores.reads import StoredMessage
from .budget import DEFAULT_BUDGET, MIN_SHARE, Budget, estimate_tokens, trim
from .catalogue import Catalogue, ConversationInfo, message_id
from .results import (Citation, ConversationList, ConversationOut, ConversationPage, ExchangeOut, MemoryStats,
                      MessageOut, SearchAnswer)

log = logging.getLogger("sparky.mcp")

MAX_K = 20
MAX_OFFSET = 100
MAX_LIST = 200

Query = Annotated[str, Field(min_length=1, max_length=2000,
                             description="What to look for, in the user's words: a topic, an error, a name.")]
Role = Annotated[Literal["user", "assistant"] | None,
                 Field(description="Only messages the user wrote, or only the assistant's.")]
Since = Annotated[str | None, Field(description="Only from this date on: YYYY-MM-DD, YYYY-MM or YYYY (UTC).")]
Until = Annotated[str | None, Field(description="Only up to the end of this date: YYYY-MM-DD, YYYY-MM or YYYY.")]
Source = Annotated[Literal["chatgpt", "claude"] | None, Field(description="Only conversations from this export.")]


class MemoryTools:
    """The tool bodies over one store (opened read-only by URL); the embedding model is loaded once."""

    def __init__(self, url: str, embedder: str | None = None, budget: int = DEFAULT_BUDGET) -> None:
        self.store: Store = open_for_search(url)
        self.embedder = embedder
        self.budget = budget
        self.catalogue = Catalogue(self.store)
        self._searcher: Searcher | None = None
        self._warming: threading.Thread | None = None
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Start loading the embedding model in the background, so the first search need not wait for all of
        it. Not a daemon thread: the process waits for it at exit (onnxruntime aborts a process that ends
        while a model is loading, as when a client disconnects at once)."""
        with self._lock:
            try:
                name = self._search().embedder_name
            except SparkyError as exc:  # e.g. an empty store: every search will say so
                log.warning("%s", exc)
                return
            self._warming = threading.Thread(target=_load_quietly, args=(name,), name=f"load-{name}")
            self._warming.start()

    def close(self) -> None:
        with self._lock:
            self.store.close()

    def search_memory(self, query: Query,
                      k: Annotated[int, Field(ge=1, le=MAX_K, description="Exchanges to return.")] = 5,
                      role: Role = None, since: Since = None, until: Until = None,
                      conversation: Annotated[str | None, Field(
                          description="Only this conversation: its id, or a part of its title.")] = None,
                      source: Source = None,
                      offset: Annotated[int, Field(ge=0, le=MAX_OFFSET,
                                                   description="Skip this many exchanges (to page).")] = 0,
                      ) -> Annotated[CallToolResult, SearchAnswer]:
        """Search the user's past AI chat conversations (their long-term memory) by meaning and by words.

        Returns question/answer exchanges, best match first, each with its conversation title, date and a
        citation (conversation id, message id); says so when nothing matches well. Use it when the user
        refers to something discussed before, or when their history would help the answer.
        """
        with self._answering("search_memory", query=query, k=k, role=role, since=since, until=until,
                             conversation=conversation, source=source, offset=offset) as started:
            filters = Filters(role, conversation, source, parse_when(since) if since else None,
                              parse_when(until, end=True) if until else None)
            wanted = offset + k
            found = self._search().search(query, k=wanted + 1, filters=filters)  # one result per exchange
            answer = self._pack_exchanges(found[offset:wanted], offset, more=len(found) > wanted)
            return self._reply("search_memory", answer, started)

    def get_conversation(self, id: Annotated[str, Field(min_length=1, description=(
                             "The conversation's id (from a citation or list_conversations).")
                         )],
                         around_message: Annotated[str | None, Field(description=(
                             "A message id from a citation: show the messages around it."))] = None,
                         window: Annotated[int, Field(ge=0, le=50, description=(
                             "With around_message: messages to show on either side."))] = 3,
                         offset: Annotated[int, Field(ge=0, description=(
                             "Without around_message: index of the first message to show (to page)."))] = 0,
                         ) -> Annotated[CallToolResult, ConversationPage]:
        """Read a conversation from the memory: the whole transcript (paged to fit), or the messages around
        one message of a citation."""
        with self._answering("get_conversation", id=id, around_message=around_message, window=window,
                             offset=offset) as started:
            info = self.catalogue.resolve(id)
            messages = self.catalogue.transcript(info)
            end = len(messages)
            if around_message is not None:
                at = _find_message(messages, around_message)
                offset, end = max(0, at - window), min(len(messages), at + window + 1)
            return self._reply("get_conversation", self._page(info, messages, offset, end), started)

    def list_conversations(self, query: Annotated[str | None, Field(description=(
                               "Only conversations whose title contains this (or with this id)."))] = None,
                           since: Since = None, until: Until = None,
                           limit: Annotated[int, Field(ge=1, le=MAX_LIST, description="Conversations to list.")] = 20,
                           offset: Annotated[int, Field(ge=0, description="Skip this many (to page).")] = 0,
                           ) -> Annotated[CallToolResult, ConversationList]:
        """List the conversations in the memory, most recent first: titles, dates and ids, to browse."""
        with self._answering("list_conversations", query=query, since=since, until=until, limit=limit,
                             offset=offset) as started:
            start = parse_when(since) if since else None
            stop = parse_when(until, end=True) if until else None
            infos = self.catalogue.matching(query) if query else list(self.catalogue.conversations().values())
            infos = [info for info in infos if _overlaps(info, start, stop)]
            infos.sort(key=lambda info: (info.last or info.started or 0.0, info.row), reverse=True)
            budget = Budget(self.budget)
            listed: list[ConversationOut] = []
            for info in infos[offset:offset + limit]:
                item = _conversation_out(info)
                if not budget.take(item.line()):
                    break
                listed.append(item)
            shown = offset + len(listed)
            answer = ConversationList(total=len(infos), conversations=listed,
                                      next_offset=shown if shown < len(infos) else None)
            return self._reply("list_conversations", answer, started)

    def memory_stats(self) -> Annotated[CallToolResult, MemoryStats]:
        """What the memory holds: conversation, message and chunk counts, sources, date range, model."""
        with self._answering("memory_stats") as started:
            stats = self.store.stats()
            infos = list(self.catalogue.conversations().values())
            dates = [date for info in infos for date in (info.started, info.last) if date is not None]
            answer = MemoryStats(
                conversations=stats["conversations"], messages=stats["messages"], chunks=stats["chunks"],
                sources=dict(Counter(info.source for info in infos)),
                first=iso_date(min(dates)) if dates else None, last=iso_date(max(dates)) if dates else None,
                model=stats.get("model"), dimensions=stats.get("dimensions"))
            return self._reply("memory_stats", answer, started)

    def conversation_text(self, id: str) -> str:
        """A whole conversation as text (the ``conversation://{id}`` resource): not paged."""
        with self._answering("conversation resource", id=id):
            info = self.catalogue.resolve(id)
            messages = self.catalogue.transcript(info)
            return ConversationPage(
                id=info.id, title=info.title, source=info.source, started=iso_date(info.started),
                last=iso_date(info.last), total=len(messages), offset=0,
                messages=[_message_out(row, row.text, False) for row in messages], next_offset=None).text()

    def conversation_list(self) -> list[ConversationInfo]:
        """Every conversation, most recent first (the resource listing)."""
        with self._answering("resource listing"):
            infos = list(self.catalogue.conversations().values())
            return sorted(infos, key=lambda info: (info.last or info.started or 0.0, info.row), reverse=True)

    @contextmanager
    def _answering(self, what: str, **arguments: object) -> Iterator[float]:
        """One call at a time; a Sparky error becomes a tool error (one line, the server carries on). The
        arguments (the caller's words) are logged at DEBUG only."""
        log.debug("%s %r", what, arguments)
        with self._lock:
            started = time.perf_counter()
            try:
                yield started
            except SparkyError as exc:
                log.info("%s refused (%s)", what, type(exc).__name__)
                raise ToolError(str(exc)) from None

    def _search(self) -> Searcher:
        if self._warming is not None:  # one load of the model: a search waits for the one under way
            self._warming.join()
            self._warming = None
        if self._searcher is None:  # made on first need: the store may still have been empty at start-up
            self._searcher = Searcher(self.store, self.embedder)
        return self._searcher

    def _pack_exchanges(self, found: list[SearchResult], offset: int, more: bool) -> SearchAnswer:
        budget = Budget(self.budget)
        share = max(MIN_SHARE, self.budget // max(1, len(found)) // 2)  # each half of each exchange
        shown: list[ExchangeOut] = []
        for rank, exchange in enumerate(found, offset + 1):
            item = _exchange_out(rank, exchange, share)
            if not budget.take(item.block(), force=not shown):
                break
            shown.append(item)
        cut = len(shown) < len(found)
        next_offset = offset + len(shown) if cut or more else None
        return SearchAnswer(exchanges=shown, no_good_match=offset == 0 and not found, next_offset=next_offset)

    def _page(self, info: ConversationInfo, messages: list[StoredMessage], offset: int, end: int) -> ConversationPage:
        budget = Budget(self.budget)
        shown: list[MessageOut] = []
        for row in messages[offset:end]:
            text, trimmed = trim(row.text, max(MIN_SHARE, budget.left - 40)) if not shown else (row.text, False)
            item = _message_out(row, text, trimmed)
            if not budget.take(item.block(), force=not shown):
                break
            shown.append(item)
        following = offset + len(shown)
        return ConversationPage(id=info.id, title=info.title, source=info.source, started=iso_date(info.started),
                                last=iso_date(info.last), total=len(messages), offset=offset, messages=shown,
                                next_offset=following if following < len(messages) else None)

    @staticmethod
    def _reply(tool: str, answer: SearchAnswer | ConversationPage | ConversationList | MemoryStats,
               started: float) -> CallToolResult:
        text = answer.text()
        log.info("%s answered: ~%d tokens in %.0f ms", tool, estimate_tokens(text),
                 (time.perf_counter() - started) * 1000)
        return CallToolResult(content=[TextContent(type="text", text=text)],
                              structured_content=answer.model_dump(mode="json"))


def _load_quietly(name: str) -> None:
    try:
        get_embedder(name)  # kept loaded for the process
    except Exception as exc:  # noqa: BLE001 - the first search loads it again and reports the error
        log.debug("loading %s failed: %s", name, exc)


def _exchange_out(rank: int, hit: SearchResult, share: int) -> ExchangeOut:
    """A search result as the exchange it belongs to; the half that matched shows its passage when cut."""
    passage = hit.snippet or hit.text

    def half(message: ContextMessage | None) -> str | None:
        if message is None:
            return None
        text, cut = trim(message.text, share)
        if cut and message.key == hit.key:  # the start of a long message may miss the match: show the passage
            text = trim(passage, share)[0]
        return text

    return ExchangeOut(rank=rank, title=hit.title, date=iso_date(hit.created_at), source=hit.source,
                       matched="question" if hit.role == "user" else "answer", question=half(hit.question),
                       answer=half(hit.answer), passage=passage,
                       citation=Citation(conversation=hit.conversation_id, message=message_id(hit)), score=hit.score)


def _message_out(row: StoredMessage, text: str, trimmed: bool) -> MessageOut:
    return MessageOut(id=message_id(row), role=row.role, date=iso_date(row.created_at), text=text, trimmed=trimmed)


def _conversation_out(info: ConversationInfo) -> ConversationOut:
    return ConversationOut(id=info.id, title=info.title, source=info.source, started=iso_date(info.started),
                           last=iso_date(info.last))


def _find_message(messages: list[StoredMessage], wanted: str) -> int:
    """The index of the message whose id (or whole key) is ``wanted``."""
    wanted = wanted.strip().lower()
    found = [index for index, row in enumerate(messages) if wanted and row.key.startswith(wanted)]
    if len(found) != 1:
        raise ToolError("no message with that id in this conversation; use a message id from a citation"
                        if not found else "that message id is ambiguous here; give more of it")
    return found[0]


def _overlaps(info: ConversationInfo, start: float | None, stop: float | None) -> bool:
    """Whether the conversation has a date in [start, stop) (an undated one passes no date filter)."""
    first, last = info.started if info.started is not None else info.last, info.last or info.started
    if start is not None and (last is None or last < start):
        return False
    return not (stop is not None and (first is None or first >= stop))
