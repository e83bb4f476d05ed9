"""``sparky search``: the command over ``sparky.search``, printing a table, JSON or a prompt-ready block."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import console, db_option, friendly_errors, progress_file_option, store_url
from ..search import MODES, Filters, Searcher, SearchResult, iso_date, open_for_search, parse_when, preload_embedder

FORMATS = ("table", "json", "context")


@click.command("search", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("query", nargs=-1, required=True)
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 1000), help="Messages to return.")
@click.option("--role", type=click.Choice(["user", "assistant"]), help="Only messages by this role.")
@click.option("--conversation", metavar="ID|TITLE", help="Only this conversation: its id or part of its title.")
@click.option("--since", metavar="DATE", help="Only messages from this date on (YYYY-MM-DD, UTC).")
@click.option("--until", metavar="DATE", help="Only messages up to the end of this date (YYYY-MM-DD, UTC).")
@click.option("--source", type=click.Choice(["chatgpt", "claude"]), help="Only messages from this export format.")
@click.option("--context", "context", default=0, show_default=True, type=click.IntRange(0, 100),
              help="Also show N messages before and after each hit.")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True,
              help="hybrid fuses vector and keyword search; the others use one side alone.")
@click.option("--format", "output", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table, one JSON document, or a compact block to paste into a prompt.")
@click.option("--embedder", help="Embedding model for the query (default: the one the store was built with).")
@progress_file_option
@db_option
@friendly_errors
def search_command(query: tuple[str, ...], k: int, role: str | None, conversation: str | None, since: str | None,
                   until: str | None, source: str | None, context: int, mode: str, output: str, embedder: str | None,
                   progress_file: Path, db: str | None) -> None:
    """Search the memory for QUERY: messages that match its meaning and its words."""
    text = " ".join(query)
    filters = Filters(role, conversation, source, parse_when(since) if since else None,
                      parse_when(until, end=True) if until else None)
    store = open_for_search(store_url(db, progress_file))
    try:
        searcher = Searcher(store, embedder)
        if mode != "keyword":
            preload_embedder(searcher.embedder_name)
        results = searcher.search(text, k=k, mode=mode, filters=filters, context=context)
    finally:
        store.close()
    if output == "json":
        given = {"role": role, "conversation": conversation, "source": source, "since": since, "until": until}
        document = {"query": text, "mode": mode, "k": k, "filters": given,
                    "results": [result.to_dict() for result in results]}
        click.echo(json.dumps(document, ensure_ascii=False, indent=2))
    elif not results:
        click.echo("No messages match.", err=True)
    elif output == "context":
        click.echo(context_block(results))
    else:
        print_table(results, mode)


def context_block(results: list[SearchResult]) -> str:
    """Each hit with its neighbours as ``role: text`` lines under a title and date header."""
    blocks = []
    for number, result in enumerate(results, 1):
        header = f"[{number}] {result.title} · {_day(result.created_at)} · {result.source}"
        lines = [f"{item.role}: {item.text.strip()}" for item in (*result.before, result, *result.after)]
        blocks.append("\n".join([header, *lines]))
    return "\n\n".join(blocks)


def print_table(results: list[SearchResult], mode: str) -> None:
    """A rich table: rank, score, date, role, conversation and the snippet with the query terms marked."""
    from rich.table import Table
    from rich.text import Text

    table = Table(show_lines=True, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("RRF" if mode == "hybrid" else "cosine" if mode == "vector" else "BM25", justify="right")
    table.add_column("date")
    table.add_column("role")
    table.add_column("conversation", max_width=30)
    table.add_column("match", ratio=1)
    for number, result in enumerate(results, 1):
        match = Text()
        for item in result.before:
            match.append(f"{item.role}: {_short(item.text)}\n", style="dim")
        snippet = Text(result.snippet)
        for start, end in result.highlights:
            snippet.stylize("bold yellow", start, end)
        match.append_text(snippet)
        for item in result.after:
            match.append(f"\n{item.role}: {_short(item.text)}", style="dim")
        table.add_row(str(number), f"{result.score:.4g}", _day(result.created_at), result.role,
                      Text(result.title), match)
    console().print(table)


def _day(epoch: float | None) -> str:
    return (iso_date(epoch) or "undated")[:10]


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"



