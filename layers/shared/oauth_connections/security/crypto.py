"""Envelope encryption of client secrets and tokens under the service's KMS key.

The AWS Encryption SDK does the cryptography: a data key from KMS per message, AES-256-GCM with key
commitment, and the encryption context authenticated in the message header. The context names tenant,
connection and purpose; decryption checks that the header's context is exactly the one expected, so a
ciphertext copied onto another item (or used for another purpose) does not decrypt. Data keys are cached
in memory for at most five minutes, so a warm function decrypts without calling KMS.

KMS calls carry the timeouts and attempts of core/aws.py. The SDK reports every failed data-key decryption as
the same DecryptKeyError, so the KMS answers of the current call are watched to tell them apart: a
throttled or unreachable KMS is `service_unavailable` (try again), a refusal (a disabled key, a missing
grant) is `key_unavailable` with KMS's own code, and only a ciphertext that KMS had no part in refusing
"does not decrypt".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from oauth_connections.core import aws
from oauth_connections.core.errors import ConfigurationError, DecryptionError, ServiceUnavailableError

type Purpose = Literal["client_secret", "tokens", "flow"]

DATA_KEY_CACHE_CAPACITY = 256
DATA_KEY_MAX_AGE_SECONDS = 300.0
DATA_KEY_MAX_MESSAGES = 1000
# Reserved context keys the SDK itself may add to a message header.
_SDK_CONTEXT_PREFIX = "aws-crypto-"
# Whether KMS answered "throttled" or "failed" during the current encrypt/decrypt, and its last error code.
_kms_unavailable: ContextVar[bool] = ContextVar("kms_unavailable", default=False)
_kms_error_code: ContextVar[str | None] = ContextVar("kms_error_code", default=None)


@dataclass(frozen=True)
class EncryptionContext:
    tenant_id: str
    connection_id: str
    purpose: Purpose

    def as_dict(self) -> dict[str, str]:
        return {"tenant_id": self.tenant_id, "connection_id": self.connection_id, "purpose": self.purpose}


class KeyUnavailableError(DecryptionError):
    """KMS refused to decrypt the data key (a disabled or deleted key, a missing grant): not the ciphertext's fault."""

    code = "key_unavailable"

    def __init__(self, kms_error_code: str) -> None:
        super().__init__(f"KMS did not decrypt the data key: {kms_error_code}")
        self.kms_error_code = kms_error_code


def _watch_kms_answer(http_response: Any = None, parsed: Any = None, **_: Any) -> None:
    code = str((parsed or {}).get("Error", {}).get("Code", ""))
    status = int(getattr(http_response, "status_code", 0) or 0)
    if code:
        _kms_error_code.set(code)
    if code in aws.UNAVAILABLE_CODES or status >= 500:
        _kms_unavailable.set(True)


class Envelope:
    def __init__(self, key_arn: str, limits: aws.CallLimits | None = None) -> None:
        import aws_encryption_sdk
        from aws_encryption_sdk import CommitmentPolicy
        from aws_encryption_sdk.caches.local import LocalCryptoMaterialsCache
        from aws_encryption_sdk.key_providers.kms import StrictAwsKmsMasterKeyProvider
        from aws_encryption_sdk.materials_managers.caching import CachingCryptoMaterialsManager

        self._algorithm = aws_encryption_sdk.Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
        self._client = aws_encryption_sdk.EncryptionSDKClient(
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
            max_encrypted_data_keys=1,
        )
        session = aws.botocore_session(limits or aws.DEFAULT_LIMITS)
        session.register("after-call.kms", _watch_kms_answer)
        self._materials = CachingCryptoMaterialsManager(
            master_key_provider=StrictAwsKmsMasterKeyProvider(key_ids=[key_arn], botocore_session=session),
            cache=LocalCryptoMaterialsCache(capacity=DATA_KEY_CACHE_CAPACITY),
            max_age=DATA_KEY_MAX_AGE_SECONDS,
            max_messages_encrypted=DATA_KEY_MAX_MESSAGES,
        )

    def encrypt(self, plaintext: bytes, context: EncryptionContext) -> bytes:
        with _kms_call():
            ciphertext, _header = self._client.encrypt(
                source=plaintext,
                materials_manager=self._materials,
                encryption_context=context.as_dict(),
                algorithm=self._algorithm,
            )
        return bytes(ciphertext)

    def decrypt(self, ciphertext: bytes, context: EncryptionContext) -> bytes:
        from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError
        from cryptography.exceptions import InvalidTag

        with _kms_call():
            try:
                plaintext, header = self._client.decrypt(source=ciphertext, materials_manager=self._materials)
            except (AWSEncryptionSDKClientError, InvalidTag) as error:
                refused_by = _kms_error_code.get()
                if refused_by and not _kms_unavailable.get():
                    raise KeyUnavailableError(refused_by) from error
                raise DecryptionError(f"ciphertext does not decrypt: {type(error).__name__}") from error
        if _own_context(header.encryption_context) != context.as_dict():
            raise DecryptionError("ciphertext belongs to another item or purpose")
        return bytes(plaintext)


@contextmanager
def _kms_call() -> Iterator[None]:
    """Report a throttled, failing or unreachable KMS as service_unavailable, whatever the SDK made of it."""
    _kms_unavailable.set(False)
    _kms_error_code.set(None)
    try:
        yield
    except ServiceUnavailableError:
        raise
    except Exception as error:
        if _kms_unavailable.get() or aws.is_unavailable(error):
            raise ServiceUnavailableError("the key service is unavailable; try again shortly") from error
        raise


def _own_context(context: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in context.items() if not k.startswith(_SDK_CONTEXT_PREFIX)}


def envelope_for(key_arn: str | None) -> Envelope:
    if not key_arn:
        raise ConfigurationError("ENCRYPTION_KEY_ARN is not set for this function")
    return _envelope(key_arn)


@cache
def _envelope(key_arn: str) -> Envelope:
    """One envelope (and so one data key cache) per key; its KMS limits are those of its first use."""
    return Envelope(key_arn, aws.current_limits())
