"""Messages as safe HTML: Markdown with raw HTML disabled, code highlighted by Pygments, safe links.

Everything from an export is untrusted. markdown-it escapes every text and attribute it writes and, with
``html`` off, turns any HTML in a message into text; links are kept only to http(s) and mailto addresses
and never send a referrer; images are shown as links (nothing is fetched from elsewhere by showing a
page). Pygments escapes the code it colours, with CSS classes only (the page's CSP allows no inline style).
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

SAFE_LINK = re.compile(r"(https?://|mailto:)", re.IGNORECASE)
LINK_REL = "noopener noreferrer nofollow"
CODE_STYLE = "default"
SHORT_TEXT = 360  # characters of the other side of an exchange shown under a hit


def _highlight(code: str, language: str, attributes: str) -> str:
    """Code coloured by Pygments when the fence names a language it knows; "" lets markdown-it escape it."""
    try:
        lexer = get_lexer_by_name(language.strip().split()[0]) if language.strip() else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return ""
    return highlight(code, lexer, HtmlFormatter(nowrap=True))


def _image_as_link(self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict,
                   env: EnvType) -> str:
    """An image as a link to it, labelled with its alt text: a page never loads anything from elsewhere."""
    token = tokens[idx]
    label = escape("image: " + (self.renderInlineAsText(token.children or [], options, env) or "untitled"))
    source = str(token.attrGet("src") or "")  # passed validateLink: http(s) or mailto
    return f"<a class=\"image\" href=\"{escape(source)}\" rel=\"{LINK_REL}\">[{label}]</a>"


def _link_open(self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    tokens[idx].attrSet("rel", LINK_REL)
    return self.renderToken(tokens, idx, options, env)


@functools.cache
def _markdown() -> MarkdownIt:
    md = MarkdownIt("js-default", {"highlight": _highlight})  # html off, linkify off, tables and ~~strike~~
    md.validateLink = lambda url: bool(SAFE_LINK.match(url.strip()))  # type: ignore[method-assign]
    md.add_render_rule("image", _image_as_link)
    md.add_render_rule("link_open", _link_open)
    return md


def markdown(text: str) -> Markup:
    """A message's Markdown as HTML that runs nothing and loads nothing."""
    return Markup(_markdown().render(text))


def marked(text: str, spans: Sequence[tuple[int, int]]) -> Markup:
    """``text`` escaped, with the ``[start, end)`` spans wrapped in ``<mark>`` (overlaps merged)."""
    parts: list[str] = []
    at = 0
    for start, end in sorted(spans):
        start = max(start, at)
        if end <= start:
            continue
        parts += [str(escape(text[at:start])), "<mark>", str(escape(text[start:end])), "</mark>"]
        at = end
    parts.append(str(escape(text[at:])))
    return Markup("".join(parts))


def shortened(text: str, limit: int = SHORT_TEXT) -> str:
    """The text on one line, cut at a word near ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat.rfind(" ", 0, limit)
    return flat[: cut if cut > limit // 2 else limit].rstrip() + "…"


@functools.cache
def code_css() -> str:
    """The stylesheet of the highlighted code's classes."""
    return HtmlFormatter(style=CODE_STYLE).get_style_defs("pre code")
