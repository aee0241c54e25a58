"""The session side of the client: where the bearer token goes, and the one retry after a 401."""

from __future__ import annotations

from typing import Any

import requests

from oauth_connections_client.errors import UrlNotAllowedError
from oauth_connections_client.netguard import STRICT, UrlPolicy, is_under, mount_guard
from oauth_connections_client.tokens import AccessToken, get_access_token

type TokenSource = Any  # a callable like get_access_token


class AuthorizedSession(requests.Session):
    """A requests session that sends the connection's bearer token, and only where it may go.

    Every request (each redirect hop too) must be under one of the connection's allowed_urls and pass
    the SSRF guard. A 401 forces one refresh and one retry, never more.
    """

    def __init__(
        self,
        tenant_id: str,
        connection_id: str,
        *,
        min_valid_seconds: int = 60,
        policy: UrlPolicy = STRICT,
        token_source: TokenSource = get_access_token,
        **token_options: Any,
    ) -> None:
        super().__init__()
        mount_guard(self, policy)
        self.tenant_id = tenant_id
        self.connection_id = connection_id
        self.min_valid_seconds = min_valid_seconds
        self._token_source = token_source
        self._token_options = token_options
        self._token: AccessToken | None = None

    def _current_token(self, *, force: bool = False) -> AccessToken:
        if force or self._token is None or not self._token.valid_for(self.min_valid_seconds):
            self._token = self._token_source(
                self.tenant_id,
                self.connection_id,
                min_valid_seconds=self.min_valid_seconds,
                force_refresh=force,
                **self._token_options,
            )
        return self._token

    def _check_allowed(self, url: str, token: AccessToken) -> None:
        if not any(is_under(url, base) for base in token.allowed_urls):
            raise UrlNotAllowedError(f"{url.split('?')[0]} is not under the connection's allowed_urls")

    def request(self, method: str | bytes, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        target = url.decode() if isinstance(url, bytes) else url
        headers = dict(kwargs.pop("headers", None) or {})
        response = self._send_with_token(method, target, headers, kwargs, force=False)
        if response.status_code != 401:
            return response
        response.close()
        return self._send_with_token(method, target, headers, kwargs, force=True)

    def _send_with_token(
        self, method: str | bytes, url: str, headers: dict[str, str], options: dict[str, Any], *, force: bool
    ) -> requests.Response:
        token = self._current_token(force=force)
        self._check_allowed(url, token)
        headers["Authorization"] = f"Bearer {token.access_token}"
        return super().request(method, url, headers=headers, **options)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if self._token is not None and request.url:
            self._check_allowed(request.url, self._token)  # every redirect hop, before it is sent
        return super().send(request, **kwargs)
