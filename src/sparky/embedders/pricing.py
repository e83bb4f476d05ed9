"""List prices of OpenAI's embedding models, for the plan shown before a run and the cost still to pay.

Prices are per million input tokens at api.openai.com (standard tier, not the Batch API). Any other host
(a server of your own, a proxy, another provider) has no price here: its cost is unknown.
"""

from __future__ import annotations

OPENAI_HOST = "api.openai.com"
# model -> (US dollars per 1M tokens, native dimensions, window in tokens)
OPENAI_MODELS: dict[str, tuple[float, int, int]] = {
    "text-embedding-3-small": (0.02, 1536, 8192),
    "text-embedding-3-large": (0.13, 3072, 8192),
    "text-embedding-ada-002": (0.10, 1536, 8192),
}


def list_price(model: str, host: str | None) -> float | None:
    """Dollars per million tokens for ``model`` at ``host``; None when unknown (another host or model)."""
    if host != OPENAI_HOST or model not in OPENAI_MODELS:
        return None
    return OPENAI_MODELS[model][0]


def cost(model: str, host: str | None, tokens: int) -> float | None:
    """The list-price cost in dollars of sending ``tokens`` tokens; None when the price is unknown."""
    price = list_price(model, host)
    return None if price is None else tokens * price / 1_000_000


def format_cost(dollars: float | None) -> str:
    """"$0.08", "$0.0012", "unknown"."""
    if dollars is None:
        return "unknown"
    if dollars == 0 or dollars >= 0.01:
        return f"${dollars:,.2f}"
    return f"${dollars:.4f}"


def recorded_cost(recorded_model: str, tokens: int) -> float | None:
    """The cost of ``tokens`` for a model as a store records it (``openai:MODEL@URL``); None when unknown."""
    from .openai_names import parse_recorded

    spec = parse_recorded(recorded_model)
    return None if spec is None else cost(spec.model, spec.host, tokens)
