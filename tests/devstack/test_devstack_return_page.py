"""The landing page `make run` serves for return URLs: it shows the outcome and nothing an attacker sends."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urlencode

import pytest
import requests

from devstack.return_page import ReturnPage

PAYLOADS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "' onmouseover='alert(1)",
    "</code><script>alert(document.cookie)</script>",
    "javascript:alert(1)",
]


@pytest.fixture(scope="module")
def page() -> Iterator[ReturnPage]:
    server = ReturnPage(0)
    server.start("return-page")
    try:
        yield server
    finally:
        server.stop()


def get(page: ReturnPage, **params: str) -> requests.Response:
    response = requests.get(f"{page.page_url}?{urlencode(params)}", timeout=10)
    assert response.status_code == 200
    return response


def test_connected(page: ReturnPage) -> None:
    response = get(page, status="connected", connection_id="con_01abc")
    assert "<h1 id=status>Connected</h1>" in response.text
    assert "<code id=connection>con_01abc</code>" in response.text


def test_error_shows_code_and_description(page: ReturnPage) -> None:
    response = get(page, status="error", error="access_denied", error_description="The user said no & left")
    assert "<h1 id=status>Connection failed</h1>" in response.text
    assert "<code id=error>access_denied</code>" in response.text
    assert "<p id=description>The user said no &amp; left</p>" in response.text


class Markup(HTMLParser):
    """What a browser would build from the page: its elements, their attributes, and the text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.text = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]

    def handle_data(self, data: str) -> None:
        self.text += data


def markup_of(page: ReturnPage, **params: str) -> Markup:
    return Markup(get(page, **params).text)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_reflected_markup(page: ReturnPage, payload: str) -> None:
    """Whatever the query holds, the page has the same elements and attributes as for a plain value;
    the payload arrives as text only."""
    cases = [
        ({"status": "connected", "connection_id": payload}, {"status": "connected", "connection_id": "x"}),
        (
            {"status": "error", "error": payload, "error_description": payload},
            {"status": "error", "error": "x", "error_description": "x"},
        ),
        ({"status": payload, payload: payload}, {"status": "x"}),
    ]
    for hostile, plain in cases:
        attacked, expected = markup_of(page, **hostile), markup_of(page, **plain)
        assert (attacked.tags, attacked.attributes) == (expected.tags, expected.attributes)
        assert "script" not in attacked.tags and not any(name.startswith("on") for name in attacked.attributes)
        if hostile["status"] in ("connected", "error"):
            assert payload in attacked.text  # shown, as text


def test_the_page_can_run_no_script(page: ReturnPage) -> None:
    headers = get(page, status="connected", connection_id="x").headers
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "script-src" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"


def test_other_paths_are_404(page: ReturnPage) -> None:
    assert requests.get(page.url + "/elsewhere", timeout=10).status_code == 404
