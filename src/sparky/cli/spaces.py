"""``sparky spaces``: the embedding spaces a store holds, how full each is, which one is primary."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from .options import DEFAULT_DB_NAME, console, friendly_errors


@click.command("spaces")
@click.option("--db", "db", envvar="SPARKY_DB", default=DEFAULT_DB_NAME, show_default=True,
              help="Memory store: a SQLite file path or a postgresql:// URL.")
@friendly_errors
def spaces_command(db: str) -> None:
    """List the store's embedding spaces: model, dimensions, vectors held per chunk, primary, complete."""
    from ..stores import open_store

    store = open_store(db, create=False)
    try:
        meta, counts, chunks = store.meta(), store.space_vectors(), store.stats()["chunks"]
    finally:
        store.close()
    primary = (meta.get("model"), meta.get("dimensions"))
    table = Table("model", "dimensions", "vectors / chunks", "primary", "complete", box=None, pad_edge=False)
    for space, vectors in counts.items():
        table.add_row(escape(space.model), str(space.dimensions), f"{vectors:,} / {chunks:,}",
                      "yes" if (space.model, str(space.dimensions)) == primary else "no",
                      "yes" if vectors == chunks else "no")
    out = console()
    if counts:
        out.print(table)
    else:
        out.print("No embedding spaces yet: run `sparky ingest EXPORT` first.")
