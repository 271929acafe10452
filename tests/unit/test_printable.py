"""Error texts from outside are made one printable line, capped, where they enter: `printable()` and
the project's error classes, which every adapter raises with a CRM's or Graph's own words."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError, CrmRejectedError, GraphError, MassChangeRefused, SyncError
from shared.printable import ERROR_CHARS, printable

HOSTILE = "\x1b]0;title\x07\x1b[2J\x1b[31mred\x1b[0m\r\nnext line\tcol\u202eevil\u200b\x00\x7f\x9b\ud800"


def test_control_format_and_surrogate_characters_go_and_line_breaks_become_spaces() -> None:
    assert printable(HOSTILE) == "]0;title[2J[31mred[0m  next line colevil"


@pytest.mark.parametrize("text", ["Ünïcode ✓ 東京 עִברִית", "plain", "", "a\u00a0b", "emoji 👩"])
def test_printable_text_of_any_script_is_kept(text: str) -> None:
    assert printable(text) == text


def test_a_long_text_is_cut_with_a_visible_mark() -> None:
    assert printable("x" * 10, 5) == "xxxx…"
    assert printable("x" * 5, 5) == "xxxxx"
    assert len(printable("\x1b" * 10 + "y" * 100, 50)) == 50


@pytest.mark.parametrize(
    "error",
    [
        CrmRejectedError(HOSTILE + "x" * 10_000, status=422),
        GraphError(HOSTILE, status=500, code="Boom"),
        MassChangeRefused(HOSTILE, planned=50, threshold=10),
        ConfigError("invalid settings", [HOSTILE]),
        SyncError(HOSTILE),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_error_of_ours_carries_one_printable_line(error: SyncError) -> None:
    text = str(error)
    assert text.isprintable() and "red" in text and len(text) <= ERROR_CHARS


def test_an_errors_other_fields_are_kept() -> None:
    error = CrmRejectedError("no", status=422, retry_after=1.5)
    assert (str(error), error.status, error.retry_after, error.retryable) == ("no", 422, 1.5, False)
    assert ConfigError("bad", ["a\nb"]).problems == ["a\nb"]  # the list as given; the message cleaned
