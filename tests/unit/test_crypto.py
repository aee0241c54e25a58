"""Envelope encryption under the KMS key of the embedded AWS."""

from __future__ import annotations

import os

import boto3
import pytest

from oauth_connections.core.errors import DecryptionError
from oauth_connections.security.crypto import EncryptionContext, Envelope
from tests.conftest import InProcessApi, Resources
from tests.support.aws_calls import count_aws_calls
from tests.unit.test_connections_api import create


@pytest.fixture
def envelope(resources: Resources) -> Envelope:
    return Envelope(resources.key_arn)


def ctx(connection_id: str = "con_a", purpose: str = "tokens", tenant: str = "acme") -> EncryptionContext:
    return EncryptionContext(tenant, connection_id, purpose)  # type: ignore[arg-type]


def test_sixty_kib_round_trip(envelope: Envelope) -> None:
    value = os.urandom(60 * 1024)
    ciphertext = envelope.encrypt(value, ctx())
    assert value not in ciphertext
    assert envelope.decrypt(ciphertext, ctx()) == value


@pytest.mark.parametrize(
    "other",
    [ctx(connection_id="con_b"), ctx(tenant="globex"), ctx(purpose="client_secret")],
    ids=["other connection", "other tenant", "other purpose"],
)
def test_ciphertext_is_bound_to_its_context(envelope: Envelope, other: EncryptionContext) -> None:
    ciphertext = envelope.encrypt(b"refresh-token", ctx())
    with pytest.raises(DecryptionError):
        envelope.decrypt(ciphertext, other)


def test_tampered_ciphertext_does_not_decrypt(envelope: Envelope) -> None:
    ciphertext = bytearray(envelope.encrypt(b"access-token", ctx()))
    ciphertext[-40] ^= 0x01
    with pytest.raises(DecryptionError):
        envelope.decrypt(bytes(ciphertext), ctx())


def test_key_from_another_account_key_is_refused(envelope: Envelope) -> None:
    other_key = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]
    foreign = Envelope(other_key).encrypt(b"x", ctx())
    with pytest.raises(DecryptionError):
        envelope.decrypt(foreign, ctx())


def test_warm_decrypt_makes_no_kms_call(envelope: Envelope) -> None:
    ciphertext = envelope.encrypt(b"token", ctx())
    envelope.decrypt(ciphertext, ctx())
    with count_aws_calls() as calls:
        for _ in range(5):
            assert envelope.decrypt(ciphertext, ctx()) == b"token"
    assert calls["kms.Decrypt"] == 0


def test_ciphertext_swapped_between_items_fails(api: InProcessApi, service_env: Resources) -> None:
    """Copy one connection's secret ciphertext onto another item: it must not decrypt there."""
    first = create(api, name="swap one", client_secret="first-secret")
    second = create(api, name="swap two", client_secret="second-secret")
    ddb = boto3.client("dynamodb")

    def key(cid: str) -> dict[str, dict[str, str]]:
        return {"pk": {"S": "TENANT#acme"}, "sk": {"S": f"CONNECTION#{cid}"}}

    stolen = ddb.get_item(TableName=service_env.table_name, Key=key(first["id"]))["Item"]["client_secret_ciphertext"]
    ddb.update_item(
        TableName=service_env.table_name,
        Key=key(second["id"]),
        UpdateExpression="SET client_secret_ciphertext = :c",
        ExpressionAttributeValues={":c": stolen},
    )
    envelope = Envelope(service_env.key_arn)
    assert envelope.decrypt(stolen["B"], ctx(first["id"], "client_secret")) == b"first-secret"
    with pytest.raises(DecryptionError):
        envelope.decrypt(stolen["B"], ctx(second["id"], "client_secret"))
