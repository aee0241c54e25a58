"""The console on the local stack: its files, its settings, and the local sign-in."""

from __future__ import annotations

import requests

from devstack import Stack
from devstack.tokens import token_scopes, verify


def sign_in(stack: Stack, body: object, origin: str | None = None) -> requests.Response:
    return requests.post(
        f"{stack.console_url}/dev-token",
        json=body,
        headers={"Origin": origin if origin is not None else stack.console_url},
        timeout=30,
    )


def test_the_console_and_its_settings_are_served(stack: Stack) -> None:
    page = requests.get(stack.console_url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert f"connect-src 'self' {stack.api_url}" in page.headers["Content-Security-Policy"]
    assert requests.get(stack.console_url + "/app.js", timeout=30).headers["Content-Type"].startswith("text/javascript")
    settings = requests.get(stack.console_url + "/config.json", timeout=30).json()
    assert settings == {
        "api_url": stack.api_url,
        "local_sign_in": True,
        "manage_scope": "connections:manage",
        "tenant_claim": "tenant_id",
        "redirect_uri": f"{stack.api_url}/oauth2/callback",
    }
    assert stack.parameters["AllowedOrigins"] == [stack.console_url]


def test_only_the_console_files_are_served(stack: Stack) -> None:
    for path in (
        "/package.json",
        "/package-lock.json",
        "/node_modules/axe-core/axe.min.js",
        "/../template.yaml",
        "/%2e%2e/template.yaml",
        "/missing.js",
    ):
        assert requests.get(stack.console_url + path, timeout=30).status_code == 404, path


def test_the_local_sign_in_gives_read_or_manage_tokens(stack: Stack) -> None:
    assert stack.signing_key is not None
    for read_only, scopes in ((True, ["connections:read"]), (False, ["connections:manage", "connections:read"])):
        answer = sign_in(stack, {"tenant": "acme", "user": "bob", "read_only": read_only})
        assert answer.status_code == 200, answer.text
        claims = verify(answer.json()["token"], [stack.signing_key], issuer=stack.issuer, audiences=stack.audience)
        assert (claims["tenant_id"], claims["sub"], sorted(token_scopes(claims))) == ("acme", "bob", scopes)


def test_the_local_sign_in_refuses_other_origins_and_bad_names(stack: Stack) -> None:
    assert (
        sign_in(stack, {"tenant": "acme", "user": "bob", "read_only": False}, "http://127.0.0.1:1").status_code == 403
    )
    bodies: list[object] = [
        {"tenant": "", "user": "bob", "read_only": False},
        {"tenant": "a#b", "user": "bob", "read_only": False},
        {"tenant": "acme", "user": "bob"},
        {"tenant": "acme", "user": "x" * 129, "read_only": True},
        [],
    ]
    for body in bodies:
        answer = sign_in(stack, body)
        assert answer.status_code == 400, body
        assert "token" not in answer.json()
