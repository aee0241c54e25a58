"""Envelope encryption of client secrets and tokens under the service's KMS key.

The AWS Encryption SDK does the cryptography: a data key from KMS per message, AES-256-GCM with key
commitment, and the encryption context authenticated in the message header. The context names tenant,
connection and purpose; decryption checks that the header's context is exactly the one expected, so a
ciphertext copied onto another item (or used for another purpose) does not decrypt. Data keys are cached
in memory for at most five minutes, so a warm function decrypts without calling KMS.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from oauth_connections.errors import ConfigurationError, DecryptionError

type Purpose = Literal["client_secret", "tokens", "flow"]

DATA_KEY_CACHE_CAPACITY = 256
DATA_KEY_MAX_AGE_SECONDS = 300.0
DATA_KEY_MAX_MESSAGES = 1000
# Reserved context keys the SDK itself may add to a message header.
_SDK_CONTEXT_PREFIX = "aws-crypto-"


@dataclass(frozen=True)
class EncryptionContext:
    tenant_id: str
    connection_id: str
    purpose: Purpose

    def as_dict(self) -> dict[str, str]:
        return {"tenant_id": self.tenant_id, "connection_id": self.connection_id, "purpose": self.purpose}


class KeyUnavailableError(DecryptionError):
    """KMS refused or failed to decrypt the data key (a disabled key, a missing grant, throttling, an outage)."""

    code = "key_unavailable"

    def __init__(self, kms_error_code: str) -> None:
        super().__init__(f"KMS did not decrypt the data key: {kms_error_code}")
        self.kms_error_code = kms_error_code


class _KmsErrors(threading.local):
    """The error code of this thread's last failed KMS call; the Encryption SDK reports only its own error."""

    last: str | None = None

    def record(self, parsed: dict[str, Any] | None = None, **_: Any) -> None:
        self.last = ((parsed or {}).get("Error") or {}).get("Code") or None


class Envelope:
    def __init__(self, key_arn: str) -> None:
        import aws_encryption_sdk
        import botocore.session
        from aws_encryption_sdk import CommitmentPolicy
        from aws_encryption_sdk.caches.local import LocalCryptoMaterialsCache
        from aws_encryption_sdk.key_providers.kms import StrictAwsKmsMasterKeyProvider
        from aws_encryption_sdk.materials_managers.caching import CachingCryptoMaterialsManager

        self._kms_errors = _KmsErrors()
        session = botocore.session.get_session()
        session.register("after-call.kms", self._kms_errors.record)
        self._algorithm = aws_encryption_sdk.Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
        self._client = aws_encryption_sdk.EncryptionSDKClient(
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
            max_encrypted_data_keys=1,
        )
        self._materials = CachingCryptoMaterialsManager(
            master_key_provider=StrictAwsKmsMasterKeyProvider(key_ids=[key_arn], botocore_session=session),
            cache=LocalCryptoMaterialsCache(capacity=DATA_KEY_CACHE_CAPACITY),
            max_age=DATA_KEY_MAX_AGE_SECONDS,
            max_messages_encrypted=DATA_KEY_MAX_MESSAGES,
        )

    def encrypt(self, plaintext: bytes, context: EncryptionContext) -> bytes:
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

        self._kms_errors.last = None
        try:
            plaintext, header = self._client.decrypt(source=ciphertext, materials_manager=self._materials)
        except (AWSEncryptionSDKClientError, InvalidTag) as error:
            if self._kms_errors.last:
                raise KeyUnavailableError(self._kms_errors.last) from error
            raise DecryptionError(f"ciphertext does not decrypt: {type(error).__name__}") from error
        if _own_context(header.encryption_context) != context.as_dict():
            raise DecryptionError("ciphertext belongs to another item or purpose")
        return bytes(plaintext)


def _own_context(context: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in context.items() if not k.startswith(_SDK_CONTEXT_PREFIX)}


@cache
def envelope_for(key_arn: str | None) -> Envelope:
    if not key_arn:
        raise ConfigurationError("ENCRYPTION_KEY_ARN is not set for this function")
    return Envelope(key_arn)
