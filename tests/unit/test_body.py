from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.sync.body import body_text, cap, html_to_text


def test_scripts_and_styles_never_pass() -> None:
    markup = (
        "<html><head><style>p{color:red}</style><title>t</title></head><body>"
        "<p>Hello &amp; <b>welcome</b></p><script>alert('x')</script>"
        "<div>Line two<br>Line three</div><img src=x onerror=alert(1)></body></html>"
    )
    text = html_to_text(markup)
    assert text == "Hello & welcome\nLine two\nLine three"


def test_malformed_html_still_gives_text() -> None:
    assert html_to_text("<p>unclosed <i>tags <div>and more") == "unclosed tags\nand more"


def test_non_ascii_survives() -> None:
    assert html_to_text("<p>Grüße, Łódź — 東京 ✓</p>") == "Grüße, Łódź — 東京 ✓"


def test_cap_marks_the_cut_visibly_and_respects_the_limit() -> None:
    text = "x" * 10_000
    capped = cap(text, 500)
    assert len(capped) <= 500
    assert "truncated" in capped and "more characters" in capped
    assert cap("short", 500) == "short"


def test_five_megabyte_body_is_capped() -> None:
    markup = "<p>" + ("word " * 1_000_000) + "</p>"
    text = body_text(markup, "html", 20_000)
    assert len(text) <= 20_000 and text.startswith("word word")


@given(st.text(max_size=300), st.integers(min_value=200, max_value=400))
def test_cap_never_exceeds_the_limit(text: str, limit: int) -> None:
    assert len(cap(text, limit)) <= limit


@given(st.text(max_size=200))
def test_any_markup_converts_without_script_content(text: str) -> None:
    out = html_to_text(f"<div>{text}</div><script>SECRET_SCRIPT()</script>")
    assert "SECRET_SCRIPT" not in out
