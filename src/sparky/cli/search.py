"""``sparky search``: the command over ``sparky.search``, printing readable results, JSON or a prompt-ready block."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .options import console, db_option, friendly_errors, progress_file_option, store_url
from ..search import (FLOORS, MODEL_FLOORS, MODES, ContextMessage, Filters, Searcher, SearchResult, iso_date, open_for_search,
                      parse_when, preload_embedder)
from ..search.snippets import best_passage, make_snippet, query_terms, term_spans

if TYPE_CHECKING:
    from rich.console import Console

    from ..embedders import Embedder
    from ..stores import Store

FORMATS = ("text", "json", "context")
SCORE_NAMES = {"hybrid": "score", "vector": "cosine", "keyword": "BM25"}
INDENT = 4


@click.command("search", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("query", nargs=-1, required=True)
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 1000), help="Results to return.")
@click.option("--role", type=click.Choice(["user", "assistant"]), help="Only messages by this role.")
@click.option("--conversation", metavar="ID|TITLE", help="Only this conversation: its id or part of its title.")
@click.option("--since", metavar="DATE", help="Only messages from this date on (YYYY-MM-DD, UTC).")
@click.option("--until", metavar="DATE", help="Only messages up to the end of this date (YYYY-MM-DD, UTC).")
@click.option("--source", type=click.Choice(["chatgpt", "claude"]), help="Only messages from this export format.")
@click.option("--context", "context", default=0, show_default=True, type=click.IntRange(0, 100),
              help="Also show N messages before and after each hit.")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True,
              help="hybrid combines vector and keyword search; the others use one side alone.")
@click.option("--format", "output", type=click.Choice(FORMATS), default="text", show_default=True,
              help="readable text, one JSON document, or a compact block to paste into a prompt.")
@click.option("--full", is_flag=True, help="Print whole messages, not the matching passage.")
@click.option("--min-score", type=float, metavar="X",
              help=f"Show only results scoring at least X (default: the calibrated floor, hybrid "
                   f"{FLOORS['hybrid']}, or {FLOORS['corroborated']} for a message found by both its meaning and "
                   f"its words, vector {FLOORS['vector']}; for a store built with e5, hybrid "
                   f"{MODEL_FLOORS['e5']['hybrid']}, vector {MODEL_FLOORS['e5']['vector']}).")
@click.option("--all", "show_all", is_flag=True, help="Show the best results however weak (no relevance floor).")
@click.option("--include-superseded", is_flag=True,
              help="Also search old versions of messages a newer export edited or replaced (kept, hidden by default).")
@click.option("--embedder", help="Embedding model for the query (default: the one the store was built with).")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="A store built with --embedder openai: the environment variable holding the key (never shown).")
@click.option("--space", metavar="MODEL|EMBEDDER", help="Search this embedding space only (see `sparky spaces`; "
              "default: the best space where it has vectors, the static one elsewhere).")
@progress_file_option
@db_option
@friendly_errors
def search_command(query: tuple[str, ...], k: int, role: str | None, conversation: str | None, since: str | None,
                   until: str | None, source: str | None, context: int, mode: str, output: str, full: bool,
                   min_score: float | None, show_all: bool, include_superseded: bool, embedder: str | None,
                   api_key_env: str, space: str | None, progress_file: Path, db: str | None) -> None:
    """Search the memory for QUERY: messages that match its meaning and its words, each with its exchange."""
    text = " ".join(query)
    filters = Filters(role, conversation, source, parse_when(since) if since else None,
                      parse_when(until, end=True) if until else None, include_superseded)
    store = open_for_search(store_url(db, progress_file))
    try:
        if space is not None and embedder is not None:
            raise click.UsageError("--space searches with that space's own model: leave out --embedder")
        searcher = Searcher(store, _network_embedder(store, embedder, api_key_env) if mode != "keyword" else embedder)
        if mode != "keyword" and searcher.given_embedder is None:
            _preload(store, searcher, space)
        results = searcher.search(text, k=k, mode=mode, filters=filters, context=context, floor=not show_all,
                                  min_score=min_score, space=space)
        shared_words = not results and not show_all and min_score is None and searcher.needs_shared_words(text, mode)
    finally:
        store.close()
    floor = None if show_all else min_score if min_score is not None else searcher.floor_for(mode)
    lower = searcher.floor_for(mode, corroborated=True) if floor is not None and min_score is None else floor
    if output == "json":
        given = {"role": role, "conversation": conversation, "source": source, "since": since, "until": until}
        document = {"query": text, "mode": mode, "k": k, "filters": given, "min_score": floor,
                    "min_score_found_by_both": lower, "results": [result.to_dict() for result in results]}
        click.echo(json.dumps(document, ensure_ascii=False, indent=2))
    elif not results:
        click.echo(no_match(floor, shared_words, lower), err=True)
    elif output == "context":
        click.echo(context_block(results))
    else:
        print_results(console(), results, text, mode, full)


def _preload(store: "Store", searcher: Searcher, space: str | None) -> None:
    """Start loading the model of each space the query is embedded for (both, mid-way through a
    progressive ingestion)."""
    from ..search.spaces import embedder_of

    plan = searcher.spaces.plan(space) if searcher.requested_embedder is None else None
    names = [embedder_of(held) for held in plan.spaces] if plan and not plan.primary_only else [searcher.embedder_name]
    for name in names:
        preload_embedder(name)


def _network_embedder(store: "Store", embedder: str | None, api_key_env: str) -> "str | Embedder | None":
    """For a store built with an OpenAI-compatible model: that model, with the key from ``api_key_env``, after
    saying on stderr that the query is sent to its host. Any other store: the ``--embedder`` given."""
    from ..embedders import is_recorded_openai, openai_embedder_from_recorded, resolve_embedder

    recorded = store.meta().get("model")
    if not is_recorded_openai(recorded) or not is_recorded_openai(resolve_embedder(embedder, recorded)):
        return embedder
    network = openai_embedder_from_recorded(recorded, api_key_env=api_key_env, concurrency=1,
                                            width=int(store.meta()["dimensions"]))
    click.echo(f"Sending the query to {network.host} to embed it with {network.api_model}, the store's model "
               "(--mode keyword sends nothing).", err=True)
    return network


def no_match(floor: float | None, shared_words: bool = False, lower: float | None = None) -> str:
    """What to say when nothing is shown: no good match (nothing reached the floor, or ``lower`` when found by
    both sides; or, with ``shared_words``, nothing that did also shares enough words with a question not in
    English), or nothing at all."""
    scores = f"{floor:g} or more" if lower is None or lower == floor else \
        f"{floor:g} or more ({lower:g} when both its meaning and its words match)"
    if shared_words:
        return (f"No good match: no message scores {scores} and shares enough words with this question "
                "(a question not in English must, since the store's model reads English only). --all shows the "
                "closest ones anyway, --min-score X sets another floor.")
    if not floor:  # keyword mode's floor is 0: any message holding a word matches
        return "No messages match."
    return (f"No good match: no message scores {scores}. --all shows the closest ones anyway, "
            "--min-score X sets another floor.")


def context_block(results: list[SearchResult]) -> str:
    """Each hit with its exchange and neighbours as ``role: text`` lines under a title and date header."""
    blocks = []
    for number, result in enumerate(results, 1):
        header = f"[{number}] {result.title} · {_day(result.created_at)} · {result.source}"
        lines = [f"{item.role}: {item.text.strip()}" for item in shown_messages(result)]
        blocks.append("\n".join([header, *lines]))
    return "\n\n".join(blocks)


def shown_messages(result: SearchResult) -> list[ContextMessage | SearchResult]:
    """The hit, the other half of its exchange and its neighbours, once each, in conversation order."""
    items: dict[int, ContextMessage | SearchResult] = {
        item.position: item for item in (*result.before, result.question, result.answer, *result.after) if item}
    items[result.position] = result
    return [items[position] for position in sorted(items)]


def print_results(out: Console, results: list[SearchResult], query: str, mode: str, full: bool) -> None:
    """Per result: its title; date, source, which half of the exchange matched and the score; then the
    exchange (and any neighbours), each message as its passage (the hit's: the one that matched) or whole
    with ``full``. On a terminal, wrapped to its width with the query's words marked; otherwise plain
    text, never wrapped."""
    terms = query_terms(query)
    for number, result in enumerate(results, 1):
        half = "question" if result.role == "user" else "answer"
        meta = (f"{_day(result.created_at)} · {result.source} · matched the {half} · "
                f"{SCORE_NAMES[mode]} {result.score:.3g}")
        bodies = [(item.role, *_body(item, result, terms, full)) for item in shown_messages(result)]
        if out.is_terminal:
            _print_styled(out, number, result, meta, bodies)
        else:
            lines = [f"[{number}] {result.title}", meta] + [f"{role}: {text}" for role, text, _, _ in bodies]
            pad = "\n" + " " * INDENT
            out.print(lines[0] + pad + pad.join(line.replace("\n", pad) for line in lines[1:]), markup=False,
                      highlight=False, emoji=False, crop=False)
        if number < len(results):
            out.print()


def _body(item: ContextMessage | SearchResult, hit: SearchResult, terms: list[str],
          full: bool) -> tuple[str, tuple[tuple[int, int], ...], bool]:
    """The text shown for one message of a result, its highlighted spans, and whether it is the hit."""
    if full:
        return item.text, tuple(term_spans(item.text, terms)), item is hit
    if item is hit:
        return hit.snippet, hit.highlights, True
    return (*make_snippet(item.text, best_passage(item.text, item.text, terms), terms), False)


def _print_styled(out: Console, number: int, result: SearchResult, meta: str,
                  bodies: list[tuple[str, str, tuple[tuple[int, int], ...], bool]]) -> None:
    from rich.padding import Padding
    from rich.text import Text

    out.print(Text.assemble((f"[{number}] ", "bold"), (result.title, "bold cyan")))
    out.print(Padding(Text(meta, style="dim"), (0, 0, 0, INDENT), expand=False))
    for role, text, spans, is_hit in bodies:
        body = Text(text)
        for start, end in spans:
            body.stylize("bold yellow", start, end)
        line = Text.assemble((f"{role}: ", "bold green" if is_hit else "bold"), body)
        out.print(Padding(line, (0, 0, 0, INDENT), expand=False))


def _day(epoch: float | None) -> str:
    return (iso_date(epoch) or "undated")[:10]
