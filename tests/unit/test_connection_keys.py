"""Connection keys: one KMS data key per connection, the client secret and the tokens sealed under it.

Against the KMS of the embedded AWS and the scheduled refresh's real worker: how many KMS calls a refresh
costs a worker new to a connection and a warm one, what a moved or altered value does, and how an item
written in the Encryption SDK format is read and then written anew without losing its refresh token.
"""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

from oauth_connections.connections import tokens
from oauth_connections.core import aws
from oauth_connections.core.config import get_settings
from oauth_connections.core.errors import DecryptionError
from oauth_connections.oauth import token_endpoint
from oauth_connections.security import crypto
from oauth_connections.security.crypto import EncryptionContext, Envelope, KeyUnavailableError, is_sealed
from tests.conftest import InProcessApi, Resources
from tests.support.aws_calls import count_aws_calls
from tests.support.aws_fault_proxy import AwsFaultProxy
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint
from tests.unit.scheduled_helpers import (
    RefreshQueue,
    emptied_queue,
    insert_connected,
    load,
    make_due,
    raw_item,
    stored_tokens,
)

ROTATED = {"access_token": "access-new", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "refresh-new"}


def ctx(connection_id: str = "con_a", purpose: str = "tokens", tenant: str = "acme") -> EncryptionContext:
    return EncryptionContext(tenant, connection_id, purpose)  # type: ignore[arg-type]


@pytest.fixture
def envelope(service_env: Resources) -> Envelope:
    return Envelope(service_env.key_arn)


@pytest.fixture
def endpoint(running_endpoint: ScriptedTokenEndpoint, monkeypatch: pytest.MonkeyPatch) -> ScriptedTokenEndpoint:
    running_endpoint.reset()
    running_endpoint.default = Scripted(200, ROTATED)
    return running_endpoint


@pytest.fixture
def queue(service_env: Resources, monkeypatch: pytest.MonkeyPatch) -> RefreshQueue:
    monkeypatch.setenv("ALLOW_INSECURE_LOOPBACK_URLS", "true")  # the scripted endpoint is on loopback
    get_settings.cache_clear()
    return emptied_queue(service_env.refresh_queue_url)


def sealed(envelope: Envelope, value: bytes, context: EncryptionContext) -> bytes:
    key = envelope.new_connection_key(context.tenant_id, context.connection_id)
    return envelope.seal(value, context, key)


def test_a_sealed_value_opens_with_its_context_only(envelope: Envelope) -> None:
    ciphertext = sealed(envelope, b"refresh-token", ctx())
    assert is_sealed(ciphertext) and b"refresh-token" not in ciphertext
    crypto._connection_keys.clear()
    assert envelope.decrypt(ciphertext, ctx()) == b"refresh-token"
    for other in (ctx(connection_id="con_b"), ctx(tenant="globex"), ctx(purpose="client_secret")):
        with pytest.raises(DecryptionError) as refused:
            envelope.decrypt(ciphertext, other)
        assert type(refused.value) is DecryptionError  # not this item's: never key_unavailable


def test_a_value_moved_to_another_purpose_under_the_same_key_does_not_open(envelope: Envelope) -> None:
    key = envelope.new_connection_key("acme", "con_a")
    secret = envelope.seal(b"client-secret", ctx(purpose="client_secret"), key)
    assert envelope.decrypt(secret, ctx(purpose="client_secret")) == b"client-secret"
    with pytest.raises(DecryptionError, match="another item or purpose"):
        envelope.decrypt(secret, ctx(purpose="tokens"))


def test_a_key_of_one_connection_does_not_open_for_another(envelope: Envelope) -> None:
    """The KMS ciphertext of connection a's key, put into a value of connection b, is refused by KMS."""
    theirs = sealed(envelope, b"x", ctx(connection_id="con_a"))
    ours = sealed(envelope, b"y", ctx(connection_id="con_b"))
    length = int.from_bytes(theirs[1:3], "big")
    their_key = theirs[3 : 3 + length]
    forged = ours[:1] + len(their_key).to_bytes(2, "big") + their_key + ours[3 + int.from_bytes(ours[1:3], "big") :]
    crypto._connection_keys.clear()
    with pytest.raises(DecryptionError, match="does not belong to this connection"):
        envelope.decrypt(forged, ctx(connection_id="con_b"))


@pytest.mark.parametrize("position", [0, 3, -30, -1], ids=["format", "key", "nonce or body", "tag"])
def test_an_altered_value_does_not_open(envelope: Envelope, position: int) -> None:
    ciphertext = bytearray(sealed(envelope, b"access-token", ctx()))
    ciphertext[position] ^= 0x01
    with pytest.raises(DecryptionError):
        envelope.decrypt(bytes(ciphertext), ctx())


def test_a_key_kms_refuses_is_key_unavailable(
    envelope: Envelope, aws_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ciphertext = sealed(envelope, b"token", ctx())
    crypto._connection_keys.clear()
    with AwsFaultProxy(aws_endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        aws._clients.clear()
        proxy.fail_with("kms", 30.0, 400, "DisabledException")
        try:
            with pytest.raises(KeyUnavailableError) as refused:
                envelope.decrypt(ciphertext, ctx())
        finally:
            monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
            aws._clients.clear()
    assert refused.value.code == "key_unavailable"
    assert refused.value.kms_error_code == "DisabledException"


def test_keys_are_cached_for_a_limited_time(envelope: Envelope, monkeypatch: pytest.MonkeyPatch) -> None:
    ciphertext = sealed(envelope, b"token", ctx())
    with count_aws_calls() as calls:
        envelope.decrypt(ciphertext, ctx())
    assert calls["kms.Decrypt"] == 0
    later = time.monotonic() + crypto.CONNECTION_KEY_MAX_AGE_SECONDS + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    with count_aws_calls() as calls:
        envelope.decrypt(ciphertext, ctx())
    assert calls["kms.Decrypt"] == 1


def test_the_key_cache_is_bounded() -> None:
    cache = crypto._KeyCache(capacity=2, max_age=60)
    keys = [crypto.ConnectionKey("acme", f"con_{i}", bytes([i]), b"k" * 32) for i in range(3)]
    for key in keys:
        cache.put(key)
    assert cache.get(bytes([0]), "acme", "con_0") is None
    assert cache.get(bytes([2]), "acme", "con_2") == keys[2]
    assert cache.get(bytes([2]), "acme", "con_1") is None  # keyed by the context too


def scheduled_refresh_kms_calls(queue: RefreshQueue, tenant: str, ids: list[str]) -> dict[str, int]:
    for connection_id in ids:
        make_due(tenant, connection_id)
        queue.send(tenant, connection_id)
    with count_aws_calls(all_threads=True) as calls:  # the worker refreshes in threads of its own
        drained = queue.drain(tenant)
    assert sorted(drained.processed) == sorted(ids) and drained.failures == []
    return {name: n for name, n in calls.items() if name.startswith("kms.")}


def test_a_scheduled_refresh_costs_one_kms_call_cold_and_none_warm(
    flow_api: InProcessApi, queue: RefreshQueue, endpoint: ScriptedTokenEndpoint
) -> None:
    tenant = flow_api.tenant
    expiring = token_endpoint.TokenSet("old", "Bearer", "refresh-old", int(time.time()) + 60)
    ids = [insert_connected(tenant, endpoint.url, expiring, name=f"keys {i} {time.time_ns()}") for i in range(3)]
    crypto._envelope.cache_clear()
    crypto._connection_keys.clear()  # a worker new to these connections
    assert scheduled_refresh_kms_calls(queue, tenant, ids) == {"kms.Decrypt": 3}
    assert scheduled_refresh_kms_calls(queue, tenant, ids) == {}
    for connection_id in ids:
        assert stored_tokens(tenant, connection_id).refresh_token == "refresh-new"


def test_an_item_in_the_older_format_is_read_and_written_anew(
    flow_api: InProcessApi, queue: RefreshQueue, endpoint: ScriptedTokenEndpoint, resources: Resources
) -> None:
    """Secret and tokens as Encryption SDK messages: the refresh sends both, and stores the sealed format."""
    settings = get_settings()
    tenant = flow_api.tenant
    expiring = token_endpoint.TokenSet("old", "Bearer", "refresh-old", int(time.time()) + 60)
    connection_id = insert_connected(tenant, endpoint.url, expiring, name=f"legacy {time.time_ns()}")
    legacy = Envelope(resources.key_arn)
    secret = legacy.encrypt(b"legacy-secret", ctx(connection_id, "client_secret", tenant))
    old_tokens = legacy.encrypt(expiring.to_json(), ctx(connection_id, "tokens", tenant))
    boto3.client("dynamodb").update_item(
        TableName=resources.table_name,
        Key={"pk": {"S": f"TENANT#{tenant}"}, "sk": {"S": f"CONNECTION#{connection_id}"}},
        UpdateExpression="SET client_secret_ciphertext = :s, tokens_ciphertext = :t, token_auth_method = :m",
        ExpressionAttributeValues={":s": {"B": secret}, ":t": {"B": old_tokens}, ":m": {"S": "client_secret_post"}},
    )
    record = load(tenant, connection_id)
    assert not is_sealed(record.tokens_ciphertext)
    assert tokens.decrypt_tokens(settings, record) == expiring  # the older format still reads

    crypto._envelope.cache_clear()  # a worker new to it: both messages' data keys, then the connection's key
    calls = scheduled_refresh_kms_calls(queue, tenant, [connection_id])
    assert calls == {"kms.Decrypt": 2, "kms.GenerateDataKey": 1}
    [request] = endpoint.requests
    assert request.form["refresh_token"] == "refresh-old"
    assert request.form["client_secret"] == "legacy-secret"
    item: dict[str, Any] = raw_item(resources.table_name, tenant, connection_id)
    new_tokens, new_secret = item["tokens_ciphertext"]["B"], item["client_secret_ciphertext"]["B"]
    assert is_sealed(new_tokens) and is_sealed(new_secret)
    assert (
        new_tokens[: 3 + int.from_bytes(new_tokens[1:3], "big")]
        == new_secret[: 3 + int.from_bytes(new_secret[1:3], "big")]
    )
    assert stored_tokens(tenant, connection_id).refresh_token == "refresh-new"

    crypto._connection_keys.clear()  # the next worker new to it: one Decrypt opens secret and tokens
    endpoint.requests.clear()
    assert scheduled_refresh_kms_calls(queue, tenant, [connection_id]) == {"kms.Decrypt": 1}
    assert endpoint.requests[0].form["client_secret"] == "legacy-secret"
    assert endpoint.requests[0].form["refresh_token"] == "refresh-new"
