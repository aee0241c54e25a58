"""Encryption of client secrets and tokens under the service's KMS key.

Each connection has a data key of its own: KMS generates it under the service's key with an encryption
context naming tenant, connection and purpose `connection`, and only its KMS ciphertext is stored. The
client secret and the token set are each sealed with AES-256-GCM under that key, with a fresh random
nonce and associated data naming format version, tenant, connection and purpose (`client_secret`,
`tokens`), so a sealed value copied onto another item, another tenant or another purpose does not open.
A sealed value carries the KMS ciphertext of its key, so it opens on its own; the values of one
connection normally share one key, and a function that has opened it once keeps the plaintext key in a
bounded cache for at most five minutes, keyed by that ciphertext and the context: a worker new to a
connection calls KMS once (Decrypt), a warm one not at all, and new tokens are sealed under the same key
without a call. A new key is made when the client secret is set (create, update) and at every new grant
(the secret is sealed again under it); see SECURITY.md for the rotation and nonce limits.

Values written before connection keys (and the PKCE verifiers of flows) are AWS Encryption SDK messages:
a data key from KMS per message, AES-256-GCM with key commitment, the encryption context authenticated in
the header and checked on decryption. They still decrypt; the SDK is imported only when one is met, and a
connection's values are sealed anew on their next write.

KMS calls carry the timeouts and attempts of core/aws.py. A throttled or unreachable KMS is
`service_unavailable` (try again), a refusal (a disabled key, a missing grant) is `key_unavailable` with
KMS's own code, and a ciphertext that is not this item's "does not decrypt". The SDK reports every failed
data-key decryption as the same DecryptKeyError, so for its messages the KMS answers of the current call
are watched to tell these apart.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from oauth_connections.core import aws
from oauth_connections.core.errors import ConfigurationError, DecryptionError, ServiceUnavailableError

type Purpose = Literal["client_secret", "tokens", "flow"]

DATA_KEY_CACHE_CAPACITY = 256
DATA_KEY_MAX_AGE_SECONDS = 300.0
DATA_KEY_MAX_MESSAGES = 1000
# Plaintext connection keys one process keeps, and for how long.
CONNECTION_KEY_CACHE_CAPACITY = 4096
CONNECTION_KEY_MAX_AGE_SECONDS = 300.0
# The purpose in the KMS encryption context of a connection key.
CONNECTION_KEY_PURPOSE = "connection"
# The first byte of a sealed value (Encryption SDK messages begin with their version, 0x01 or 0x02).
SEALED_V1 = 0x81
_KEY_LENGTH_BYTES = 2
_NONCE_BYTES = 12
# KMS refusals that mean "this ciphertext is not one of this connection's keys", not "KMS refuses you".
_NOT_THIS_KEY_CODES = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})
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

    def associated_data(self) -> bytes:
        """What a sealed value is bound to, besides its key."""
        return json.dumps([SEALED_V1, self.tenant_id, self.connection_id, self.purpose]).encode()


@dataclass(frozen=True)
class ConnectionKey:
    """A connection's data key: its KMS ciphertext (stored) and, in memory only, its plaintext."""

    tenant_id: str
    connection_id: str
    blob: bytes
    plaintext: bytes = field(repr=False)


def _key_context(tenant_id: str, connection_id: str) -> dict[str, str]:
    return {"tenant_id": tenant_id, "connection_id": connection_id, "purpose": CONNECTION_KEY_PURPOSE}


class KeyUnavailableError(DecryptionError):
    """KMS refused to decrypt the data key (a disabled or deleted key, a missing grant): not the ciphertext's fault."""

    code = "key_unavailable"

    def __init__(self, kms_error_code: str) -> None:
        super().__init__(f"KMS did not decrypt the data key: {kms_error_code}")
        self.kms_error_code = kms_error_code


class _KeyCache:
    """Plaintext connection keys by their KMS ciphertext and context: bounded, each for a limited time.

    Shared by the threads of a worker, so every access holds the lock.
    """

    def __init__(self, capacity: int, max_age: float) -> None:
        self._capacity = capacity
        self._max_age = max_age
        self._entries: OrderedDict[tuple[bytes, str, str], tuple[float, ConnectionKey]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, blob: bytes, tenant_id: str, connection_id: str) -> ConnectionKey | None:
        with self._lock:
            entry = self._entries.get((blob, tenant_id, connection_id))
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[(blob, tenant_id, connection_id)]
                return None
            self._entries.move_to_end((blob, tenant_id, connection_id))
            return entry[1]

    def put(self, key: ConnectionKey) -> None:
        with self._lock:
            self._entries[(key.blob, key.tenant_id, key.connection_id)] = (time.monotonic() + self._max_age, key)
            self._entries.move_to_end((key.blob, key.tenant_id, key.connection_id))
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_connection_keys = _KeyCache(CONNECTION_KEY_CACHE_CAPACITY, CONNECTION_KEY_MAX_AGE_SECONDS)


def _watch_kms_answer(http_response: Any = None, parsed: Any = None, **_: Any) -> None:
    code = str((parsed or {}).get("Error", {}).get("Code", ""))
    status = int(getattr(http_response, "status_code", 0) or 0)
    if code:
        _kms_error_code.set(code)
    if code in aws.UNAVAILABLE_CODES or status >= 500:
        _kms_unavailable.set(True)


def is_sealed(ciphertext: bytes | None) -> bool:
    """Whether a stored value is sealed under a connection key (not an Encryption SDK message)."""
    return bool(ciphertext) and ciphertext[0] == SEALED_V1  # type: ignore[index]


def _split_sealed(ciphertext: bytes) -> tuple[bytes, bytes, bytes]:
    """A sealed value's key ciphertext, nonce and AES-GCM ciphertext (with its tag)."""
    head = 1 + _KEY_LENGTH_BYTES
    length = int.from_bytes(ciphertext[1:head], "big")
    if len(ciphertext) < head + length + _NONCE_BYTES + 16:
        raise DecryptionError("ciphertext does not decrypt: truncated")
    blob = ciphertext[head : head + length]
    nonce = ciphertext[head + length : head + length + _NONCE_BYTES]
    return blob, nonce, ciphertext[head + length + _NONCE_BYTES :]


class Envelope:
    """Opens and seals the values of connections under one KMS key.

    `limits` bound its KMS calls; None takes them from the settings and the invocation's remaining time
    at each call (the Encryption SDK's client keeps those of its first use).
    """

    def __init__(self, key_arn: str, limits: aws.CallLimits | None = aws.DEFAULT_LIMITS) -> None:
        self._key_arn = key_arn
        self._limits = limits
        self._sdk_parts: tuple[Any, Any, Any] | None = None
        self._sdk_lock = threading.Lock()

    # ---- connection keys
    def new_connection_key(self, tenant_id: str, connection_id: str) -> ConnectionKey:
        """A new data key for the connection (one GenerateDataKey)."""
        with _kms_errors(decrypting=False):
            answer = aws.client("kms", self._limits).generate_data_key(
                KeyId=self._key_arn, KeySpec="AES_256", EncryptionContext=_key_context(tenant_id, connection_id)
            )
        key = ConnectionKey(tenant_id, connection_id, bytes(answer["CiphertextBlob"]), bytes(answer["Plaintext"]))
        _connection_keys.put(key)
        return key

    def connection_key(self, tenant_id: str, connection_id: str, *stored: bytes | None) -> ConnectionKey:
        """The key of the first sealed value among `stored` (the connection's current key), else a new one."""
        for ciphertext in stored:
            if ciphertext is not None and is_sealed(ciphertext):
                return self._open_key(_split_sealed(ciphertext)[0], tenant_id, connection_id)
        return self.new_connection_key(tenant_id, connection_id)

    def _open_key(self, blob: bytes, tenant_id: str, connection_id: str) -> ConnectionKey:
        cached = _connection_keys.get(blob, tenant_id, connection_id)
        if cached is not None:
            return cached
        with _kms_errors(decrypting=True):
            answer = aws.client("kms", self._limits).decrypt(
                CiphertextBlob=blob, KeyId=self._key_arn, EncryptionContext=_key_context(tenant_id, connection_id)
            )
        key = ConnectionKey(tenant_id, connection_id, blob, bytes(answer["Plaintext"]))
        _connection_keys.put(key)
        return key

    def seal(self, plaintext: bytes, context: EncryptionContext, key: ConnectionKey) -> bytes:
        """AES-256-GCM under the connection's key, bound to the context; no KMS call."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if (key.tenant_id, key.connection_id) != (context.tenant_id, context.connection_id):
            raise ValueError("a connection key seals only its own connection's values")
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(key.plaintext).encrypt(nonce, plaintext, context.associated_data())
        length = len(key.blob).to_bytes(_KEY_LENGTH_BYTES, "big")
        return bytes([SEALED_V1]) + length + key.blob + nonce + sealed

    def _open_sealed(self, ciphertext: bytes, context: EncryptionContext) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        blob, nonce, sealed = _split_sealed(ciphertext)
        key = self._open_key(blob, context.tenant_id, context.connection_id)
        try:
            return AESGCM(key.plaintext).decrypt(nonce, sealed, context.associated_data())
        except InvalidTag as error:
            raise DecryptionError("ciphertext belongs to another item or purpose, or was altered") from error

    # ---- Encryption SDK messages (flows, and values written before connection keys)
    def _sdk(self) -> tuple[Any, Any, Any]:
        """The SDK client, its materials manager and algorithm, built on first use (the import is heavy)."""
        with self._sdk_lock:
            if self._sdk_parts is None:
                self._sdk_parts = _sdk_parts(self._key_arn, self._limits or aws.current_limits())
            return self._sdk_parts

    def encrypt(self, plaintext: bytes, context: EncryptionContext) -> bytes:
        client, materials, algorithm = self._sdk()
        with _kms_call():
            ciphertext, _header = client.encrypt(
                source=plaintext,
                materials_manager=materials,
                encryption_context=context.as_dict(),
                algorithm=algorithm,
            )
        return bytes(ciphertext)

    def decrypt(self, ciphertext: bytes, context: EncryptionContext) -> bytes:
        """A stored value in either format: sealed under a connection key, or an Encryption SDK message."""
        if is_sealed(ciphertext):
            return self._open_sealed(ciphertext, context)
        from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError
        from cryptography.exceptions import InvalidTag

        client, materials, _algorithm = self._sdk()
        with _kms_call():
            try:
                plaintext, header = client.decrypt(source=ciphertext, materials_manager=materials)
            except (AWSEncryptionSDKClientError, InvalidTag) as error:
                refused_by = _kms_error_code.get()
                if refused_by and not _kms_unavailable.get():
                    raise KeyUnavailableError(refused_by) from error
                raise DecryptionError(f"ciphertext does not decrypt: {type(error).__name__}") from error
        if _own_context(header.encryption_context) != context.as_dict():
            raise DecryptionError("ciphertext belongs to another item or purpose")
        return bytes(plaintext)


def _sdk_parts(key_arn: str, limits: aws.CallLimits) -> tuple[Any, Any, Any]:
    import aws_encryption_sdk
    from aws_encryption_sdk import CommitmentPolicy
    from aws_encryption_sdk.caches.local import LocalCryptoMaterialsCache
    from aws_encryption_sdk.key_providers.kms import StrictAwsKmsMasterKeyProvider
    from aws_encryption_sdk.materials_managers.caching import CachingCryptoMaterialsManager

    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
        max_encrypted_data_keys=1,
    )
    session = aws.botocore_session(limits)
    session.register("after-call.kms", _watch_kms_answer)
    materials = CachingCryptoMaterialsManager(
        master_key_provider=StrictAwsKmsMasterKeyProvider(key_ids=[key_arn], botocore_session=session),
        cache=LocalCryptoMaterialsCache(capacity=DATA_KEY_CACHE_CAPACITY),
        max_age=DATA_KEY_MAX_AGE_SECONDS,
        max_messages_encrypted=DATA_KEY_MAX_MESSAGES,
    )
    return client, materials, aws_encryption_sdk.Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY


@contextmanager
def _kms_errors(*, decrypting: bool) -> Iterator[None]:
    """A direct KMS call's failure as the service reports it: unavailable, or for a decryption refused
    (`key_unavailable`) or not this connection's key. A refused new key is the deployment's fault, not
    a stored value's, and stays the error it is."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if aws.is_unavailable(error):
            raise ServiceUnavailableError("the key service is unavailable; try again shortly") from error
        if not decrypting:
            raise
        if code in _NOT_THIS_KEY_CODES:
            raise DecryptionError("the data key does not belong to this connection") from error
        raise KeyUnavailableError(code or "unknown") from error
    except Exception as error:
        if aws.is_unavailable(error):
            raise ServiceUnavailableError("the key service is unavailable; try again shortly") from error
        raise


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
    """One envelope (and so one SDK data key cache) per key; its KMS calls take the limits of the moment."""
    return Envelope(key_arn, None)
