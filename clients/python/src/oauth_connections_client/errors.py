"""What the client raises: one TokenServiceError subclass per GetTokenFunction error code, one per way an
authorized call can end without an answer (calls.py), and the SSRF guard's UnsafeUrlError (the guard's
copy in netguard.py raises it, so it keeps the service's shape)."""

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


class RateLimitedError(TokenServiceError):
    """The provider answered 429 and waiting for it did not fit (or was not safe): try after `retry_after`."""

    code = "rate_limited"


class CallTimeoutError(TokenServiceError):
    """The call's overall deadline passed before the answer was read."""

    code = "timeout"


class ResponseTooLargeError(TokenServiceError):
    """The answer's body went past max_response_bytes; reading stopped there."""

    code = "response_too_large"


class InvalidCallError(TokenServiceError):
    """A call the rules refuse before anything is sent (a forbidden header, an unknown method)."""

    code = "invalid_request"


class ApiUnavailableError(TokenServiceError):
    """The API could not be reached (connection refused or reset, TLS failure)."""

    code = "provider_unavailable"


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
