"""Message bodies to plain text for journals.

nh3 (the Rust `ammonia` sanitizer) does the HTML work: scripts, styles, heads and comments are removed
with their content, every other tag except a few block-level ones is dropped, and its output is
well-formed, so the block tags left can be turned into line breaks safely. The result is capped with
a visible marker.
"""

from __future__ import annotations

import html
import re

import nh3

_BLOCK_TAGS = {
    "p",
    "br",
    "div",
    "li",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "pre",
    "hr",
    "table",
}
_DROP_WITH_CONTENT = {"script", "style", "head", "title", "noscript", "template", "object", "iframe", "svg"}
_BREAK = re.compile(r"<(?:br|hr)\s*/?>|</(?:p|div|li|tr|h[1-6]|blockquote|pre|table)>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n+")


def html_to_text(markup: str) -> str:
    cleaned = nh3.clean(
        markup, tags=_BLOCK_TAGS, attributes={}, clean_content_tags=_DROP_WITH_CONTENT, strip_comments=True
    )
    with_breaks = _BREAK.sub("\n", cleaned)
    text = html.unescape(_TAG.sub("", with_breaks))
    lines = (_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def body_text(content: str, content_type: str, max_chars: int) -> str:
    """The journal body: plain text, at most `max_chars` characters including the cut marker."""
    text = html_to_text(content) if content_type == "html" else content.replace("\r\n", "\n").strip()
    return cap(text, max_chars)


def cap(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    marker = "\n\n[… message truncated by Outlook sync: {n} more characters not shown]"
    keep = max(0, max_chars - len(marker.format(n=len(text))))
    return text[:keep] + marker.format(n=len(text) - keep)
