"""One ingestion with the openai embedder in a child process, as the CLI will run it (the test kills it):
``openai_ingest.py EXPORT PROGRESS DB BASE_URL MODEL BATCH_CHUNKS CONCURRENCY`` (key from $OPENAI_API_KEY)."""

import io
import sys
from pathlib import Path

from rich.console import Console

from sparky.cli.display import Display
from sparky.embedders import RetryPolicy, openai_embedder
from sparky.pipeline.ingest import Ingestion, StopRequest
from sparky.stores.sqlite import SQLiteStore

export, progress, db, base_url, model, batch, concurrency = sys.argv[1:8]
embedder = openai_embedder(model, base_url=base_url, concurrency=int(concurrency))
stop = StopRequest()
embedder.bind_stop(stop.event)
store = SQLiteStore(Path(db))
try:
    result = Ingestion(Path(export), Path(progress), store, embedder, Display(Console(file=io.StringIO()), quiet=True),
                       batch_chunks=int(batch), stop=stop, retry=RetryPolicy(base_delay=0.05, max_delay=1.0)).run()
finally:
    store.close()
print(f"stored {result.stored_messages} of {result.total_messages}; sent {embedder.stats.texts} texts")
sys.exit(0 if result.complete else 1)
