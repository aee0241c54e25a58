"""Pytest fixtures for tests against the local stack (``devstack``).

Use them from a ``conftest.py``::

    from tests.support.stack_fixtures import api, stack  # noqa: F401 (fixtures)

* ``stack`` (session): the project's template.yaml on free ports, a temporary state dir,
  schedules off (fire one with ``stack.fire_schedule(...)``), no demo provider; no function may have
  been refused anything by its template policy when the session ends.
* ``api``: an :class:`ApiClient` bound to the stack's API URL; ``api.as_tenant("acme")`` adds a
  bearer token for that tenant.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT


class ApiClient:
    """requests against one base URL, optionally with a bearer token."""

    def __init__(self, stack: Stack, token: str | None = None, session: requests.Session | None = None) -> None:
        self.stack = stack
        self.base_url = stack.api_url
        self.token = token
        self.session = session or requests.Session()

    def as_tenant(self, tenant_id: str, user: str = "dev-user", **claims: Any) -> ApiClient:
        """The same client with a valid bearer token for ``tenant_id`` (extra ``claims`` added)."""
        return ApiClient(self.stack, self.stack.mint_token(tenant_id, user, claims=claims or None), self.session)

    def with_token(self, token: str | None) -> ApiClient:
        return ApiClient(self.stack, token, self.session)

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        kwargs.setdefault("timeout", 60)
        kwargs.setdefault("allow_redirects", False)
        return self.session.request(method, self.url(path), headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=tmp_path_factory.mktemp("devstack"),
        schedules=False,
        with_provider=False,
    ) as running:
        yield running
        # A function refused by its own policy is a permission missing from template.yaml.
        assert running.iam_denials() == []


@pytest.fixture
def api(stack: Stack) -> ApiClient:
    return ApiClient(stack)
