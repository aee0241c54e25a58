"""Property-based fuzzing of every documented operation through the local API, from /openapi.json,
and of the public browser routes the document leaves out (/oauth2/authorize, /oauth2/callback).

Each generated request goes through the local API Gateway to the real functions on the embedded AWS,
with a valid tenant token. Every response must be a non-5xx that conforms to the documented schema
(status code, content type, body), and every error the documented error shape. Schema-valid input
may still be refused (a URL must be https to a public host, which no JSON schema can say), so the
check that all schema-valid data is accepted is left out; every other check applies.

The browser routes get random and hostile query strings and cookies, mixed with a live flow's real
handle, state and binding cookie: never a 5xx, never the client secret, the bearer token or the
binding cookie in the answer, and never a markup injection in an error page.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT

EXAMPLES_PER_OPERATION = 40
BROWSER_EXAMPLES = 150
CLIENT_SECRET = f"fuzz-client-secret-{uuid.uuid4().hex}"
MARKUP = "<script>alert(1)</script>"
COOKIE_NAME = "oauth_flow_"  # plain-http local API: no __Host- prefix; each flow's cookie adds a suffix


@pytest.fixture(scope="session")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=Path(tmp_path_factory.mktemp("fuzz-stack")),
        schedules=False,
        echo_logs=False,
    ) as running:
        yield running


@pytest.fixture(scope="session")
def bearer(fuzz_stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {fuzz_stack.mint_token('fuzz-tenant', expires_in=7200)}"}


@pytest.fixture(scope="session")
def api_schema(fuzz_stack: Stack, bearer: dict[str, str]) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_stack.api_url}/openapi.json", headers=bearer)


def test_every_operation_conforms(api_schema: Any, fuzz_stack: Stack, bearer: dict[str, str]) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 14  # every documented route is fuzzed
    for operation in operations:
        fuzz(operation, fuzz_stack.api_url, bearer)


def fuzz(operation: Any, base_url: str, bearer: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call_and_validate(
            base_url=base_url, headers=bearer, timeout=60, excluded_checks=[checks.positive_data_acceptance]
        )
        assert response.status_code < 500
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"}
            assert body["error"]["code"]
            assert body["error"]["message"]

    check()


@dataclass(frozen=True)
class LiveFlow:
    """Real values an attacker might replay or mix: unused flow handles, a redirected flow's state and
    the binding cookie of the browser that started it."""

    handles: tuple[str, ...]
    state: str
    cookie: str
    cookie_name: str


@pytest.fixture(scope="session")
def live_flow(fuzz_stack: Stack, bearer: dict[str, str]) -> LiveFlow:
    api = requests.Session()
    api.headers.update(bearer)
    created = api.post(
        f"{fuzz_stack.api_url}/connections",
        json={
            "name": "fuzzed browser routes",
            "client_id": "fuzz-client",
            "client_secret": CLIENT_SECRET,
            "authorization_url": "https://login.crm.example.com/oauth/authorize",
            "token_url": "https://login.crm.example.com/oauth/token",
        },
        timeout=60,
    )
    assert created.status_code == 201, created.text

    def handle() -> str:
        started = api.post(
            f"{fuzz_stack.api_url}/connections/{created.json()['id']}/authorize",
            json={"return_url": "http://127.0.0.1:9/done"},
            timeout=60,
        )
        assert started.status_code == 200, started.text
        return parse_qs(urlsplit(started.json()["redirect_url"]).query)["flow"][0]

    redirected = requests.get(
        f"{fuzz_stack.api_url}/oauth2/authorize", params={"flow": handle()}, allow_redirects=False, timeout=60
    )
    assert redirected.status_code == 302, redirected.text
    state = parse_qs(urlsplit(redirected.headers["Location"]).query)["state"][0]
    return LiveFlow(
        handles=(handle(), handle()),
        state=state,
        cookie=next(str(c.value) for c in redirected.cookies if c.name.startswith(COOKIE_NAME)),
        cookie_name=next(c.name for c in redirected.cookies if c.name.startswith(COOKIE_NAME)),
    )


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=300),
        st.sampled_from(
            [
                "",
                MARKUP,
                '"><img src=x onerror=alert(1)>',
                "%00",
                "%zz",
                "\x00\x01",
                "a" * 5000,
                "https://evil.example.com/",
                "javascript:alert(1)",
                "../../../etc/passwd",
                "\u202e\ufeff",
                "' OR '1'='1",
            ]
        ),
    )


def query_strings(flow: LiveFlow) -> st.SearchStrategy[str]:
    names = st.one_of(
        st.sampled_from(["flow", "state", "code", "error", "error_description", "iss", "return_url"]), st.text()
    )
    values = st.one_of(hostile_text(), st.sampled_from([*flow.handles, flow.state, flow.cookie]))
    structured = st.lists(st.tuples(names, values), max_size=8).map(urlencode)
    raw = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="#"), max_size=400)
    return st.one_of(structured, raw)


def cookie_headers(flow: LiveFlow) -> st.SearchStrategy[str | None]:
    header_safe = st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=200
    )
    names = st.one_of(
        st.sampled_from([flow.cookie_name, COOKIE_NAME, "__Host-oauth_flow", "", "=", flow.cookie_name + " "]),
        header_safe,
    )
    values = st.one_of(header_safe, st.sampled_from([flow.cookie, flow.cookie + ";", "", '"' + flow.cookie + '"']))
    pairs = st.lists(st.tuples(names, values).map(lambda pair: f"{pair[0]}={pair[1]}"), max_size=5)
    return st.one_of(st.none(), pairs.map("; ".join).map(str.strip))


@pytest.mark.parametrize("path", ["/oauth2/authorize", "/oauth2/callback"])
def test_browser_routes_withstand_hostile_requests(
    fuzz_stack: Stack, bearer: dict[str, str], live_flow: LiveFlow, path: str
) -> None:
    secrets = [CLIENT_SECRET, bearer["Authorization"].split()[1], live_flow.cookie]
    session = requests.Session()

    @given(query=query_strings(live_flow), cookie=cookie_headers(live_flow))
    @settings(max_examples=BROWSER_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(query: str, cookie: str | None) -> None:
        headers = {"Cookie": cookie} if cookie else {}
        response = session.get(
            f"{fuzz_stack.api_url}{path}?{query}", headers=headers, allow_redirects=False, timeout=60
        )
        assert response.status_code < 500, (query, cookie, response.text)
        answer = response.text + repr(sorted(response.headers.items()))
        for secret in secrets:
            assert secret not in answer
        if response.headers.get("Content-Type", "").startswith("text/html"):
            assert "<script" not in response.text.lower() and "<img" not in response.text.lower()

    check()
