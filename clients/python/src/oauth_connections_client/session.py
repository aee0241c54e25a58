"""The session side of the client: a requests session that sends the connection's token by the call engine's rules."""

from __future__ import annotations

import time
from typing import Any

import requests

from oauth_connections_client.calls import check_headers, prepare_session, send
from oauth_connections_client.errors import InvalidCallError
from oauth_connections_client.netguard import STRICT, UrlPolicy
from oauth_connections_client.tokens import AccessToken, get_access_token

type TokenFetcher = Any  # a callable like get_access_token

_SEND_OPTIONS = ("stream", "verify", "cert", "proxies")


class AuthorizedSession(requests.Session):
    """A requests session that sends the connection's bearer token, and only where it may go.

    It follows calls.py, the rules CallApiFunction follows too: every request and each redirect hop under
    the connection's allowed_urls and through the SSRF guard, no caller Authorization, Host, Cookie or
    hop-by-hop header, one forced refresh and one retry after a 401. A 429 or 503 with Retry-After is
    waited for and retried only within a deadline (`deadline_seconds`, per session or per request) and
    only when repeating is safe (an idempotent method or an `idempotency_key`).
    """

    def __init__(
        self,
        tenant_id: str,
        connection_id: str,
        *,
        min_valid_seconds: int = 60,
        policy: UrlPolicy = STRICT,
        deadline_seconds: float | None = None,
        token_source: TokenFetcher = get_access_token,
        **token_options: Any,
    ) -> None:
        super().__init__()
        prepare_session(self, policy)
        self.tenant_id = tenant_id
        self.connection_id = connection_id
        self.min_valid_seconds = min_valid_seconds
        self.deadline_seconds = deadline_seconds
        self._token_source = token_source
        self._token_options = token_options
        self._token: AccessToken | None = None

    def _current_token(self, *, force_refresh: bool) -> AccessToken:
        if force_refresh or self._token is None or not self._token.valid_for(self.min_valid_seconds):
            self._token = self._token_source(
                self.tenant_id,
                self.connection_id,
                min_valid_seconds=self.min_valid_seconds,
                force_refresh=force_refresh,
                **self._token_options,
            )
        return self._token

    def request(  # type: ignore[override]
        self,
        method: str | bytes,
        url: str | bytes,
        *,
        idempotency_key: str | None = None,
        deadline_seconds: float | None = None,
        timeout: Any = None,
        allow_redirects: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        if "auth" in kwargs or "cookies" in kwargs:
            raise InvalidCallError(
                "the session sends the connection's token and no cookies: auth and cookies are refused"
            )
        options = {name: kwargs.pop(name) for name in _SEND_OPTIONS if name in kwargs}
        stream = bool(options.pop("stream", False))
        check_headers({**self.headers, **(kwargs.get("headers") or {})})
        request = self.prepare_request(
            requests.Request(
                method=(method.decode() if isinstance(method, bytes) else method).upper(),
                url=url.decode() if isinstance(url, bytes) else url,
                **kwargs,
            )
        )
        seconds = self.deadline_seconds if deadline_seconds is None else deadline_seconds
        response = send(
            self,
            request,
            self._current_token,
            expires=time.monotonic() + seconds if seconds is not None else None,
            timeout=timeout,
            idempotency_key=idempotency_key,
            allow_redirects=allow_redirects,
            **options,
        ).response
        if not stream:
            response.content  # noqa: B018 - read now, as a requests session does without stream=True
        return response
