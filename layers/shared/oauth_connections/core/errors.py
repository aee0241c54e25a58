"""Domain errors. Each carries a stable code and the HTTP status the API maps it to (entrypoints/http/resolver.py)."""

from __future__ import annotations


class ServiceError(Exception):
    """A subclass names its code and status in its bases (`code=..., status=...`), or as class attributes."""

    code = "internal_error"
    status = 500

    def __init_subclass__(cls, *, code: str | None = None, status: int | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if status is not None:
            cls.status = status

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class ConfigurationError(ServiceError, code="configuration_error"): ...


class InvalidRequestError(ServiceError, code="invalid_request", status=400): ...


class UnsafeUrlError(InvalidRequestError, code="unsafe_url"):
    """A URL the service must not call: wrong scheme, or a non-public address."""


class UnauthorizedError(ServiceError, code="unauthorized", status=401): ...


class NotFoundError(ServiceError, code="not_found", status=404): ...


class ConflictError(ServiceError, code="conflict", status=409): ...


class PreconditionFailedError(ServiceError, code="precondition_failed", status=412): ...


class PayloadTooLargeError(ServiceError, code="payload_too_large", status=413): ...


class UnsupportedMediaTypeError(ServiceError, code="unsupported_media_type", status=415): ...


class DecryptionError(ServiceError, code="decryption_failed"):
    """A ciphertext that does not decrypt under the expected context (tampered, or moved to another item)."""


class ValidationFailedError(ServiceError, code="validation_error", status=422): ...


class ServiceUnavailableError(ServiceError, code="service_unavailable", status=503):
    """An AWS dependency throttled, timed out or refused: nobody's fault, and worth a retry shortly."""

    def __init__(self, message: str, *, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after
