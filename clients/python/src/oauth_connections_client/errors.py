"""What the client raises: one TokenServiceError subclass per GetTokenFunction error code, and the
SSRF guard's UnsafeUrlError (the guard's copy in netguard.py raises it, so it keeps the service's shape)."""

from __future__ import annotations

from typing import ClassVar


class TokenServiceError(Exception):
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ConnectionNotFoundError(TokenServiceError):
    code = "not_found"


class ConnectionNotConnectedError(TokenServiceError):
    code = "not_connected"


class ReauthorizationRequiredError(TokenServiceError):
    code = "reauthorization_required"


class ProviderUnavailableError(TokenServiceError):
    code = "provider_unavailable"


class ServiceUnavailableError(TokenServiceError):
    """The token service's own AWS dependencies were throttled or down; retry after `retry_after` seconds."""

    code = "service_unavailable"


class InvalidTokenRequestError(TokenServiceError):
    code = "invalid_request"


class UrlNotAllowedError(TokenServiceError):
    """The URL is outside the connection's allowed_urls: the token is never sent there."""

    code = "url_not_allowed"


class UnsafeUrlError(Exception):
    """A URL the SSRF guard refuses: wrong scheme, bad shape, or a non-public address."""

    code = "unsafe_url"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


ERRORS_BY_CODE: dict[str, type[TokenServiceError]] = {
    cls.code: cls
    for cls in (
        ConnectionNotFoundError,
        ConnectionNotConnectedError,
        ReauthorizationRequiredError,
        ProviderUnavailableError,
        ServiceUnavailableError,
        InvalidTokenRequestError,
    )
}
