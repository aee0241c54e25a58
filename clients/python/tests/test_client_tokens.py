"""get_access_token against a GetTokenFunction-shaped answer: the request it sends, the token or typed error."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fake_token_service import FakeTokenService

import oauth_connections_client as client


def test_asks_get_token_function_and_returns_the_token() -> None:
    service = FakeTokenService(allowed_urls=["https://api.crm.example.com/v2/"])
    token = client.get_access_token("acme", "con_1", min_valid_seconds=120, lambda_client=service)
    assert service.invocations == [
        {
            "FunctionName": "GetTokenFunction",
            "InvocationType": "RequestResponse",
            "tenant_id": "acme",
            "connection_id": "con_1",
            "min_valid_seconds": 120,
            "force_refresh": False,
        }
    ]
    assert token == client.AccessToken(
        access_token="token-1",
        token_type="Bearer",
        expires_at=datetime(2999, 1, 1, tzinfo=UTC),
        scopes=("read",),
        allowed_urls=("https://api.crm.example.com/v2/",),
    )


def test_function_name_and_correlation_id(monkeypatch: pytest.MonkeyPatch) -> None:
    service = FakeTokenService()
    monkeypatch.setenv("GET_TOKEN_FUNCTION_NAME", "svc-GetTokenFunction-abc")
    client.get_access_token("acme", "con_1", correlation_id="req-7", force_refresh=True, lambda_client=service)
    client.get_access_token("acme", "con_1", function_name="explicit", lambda_client=service)
    assert [call["FunctionName"] for call in service.invocations] == ["svc-GetTokenFunction-abc", "explicit"]
    assert service.invocations[0]["correlation_id"] == "req-7"
    assert service.invocations[0]["force_refresh"] is True
    assert "correlation_id" not in service.invocations[1]


def test_a_token_without_expiry_or_type() -> None:
    service = FakeTokenService()
    service.answers.append({"access_token": "opaque", "token_type": None, "expires_at": None})
    token = client.get_access_token("acme", "con_1", lambda_client=service)
    assert (token.token_type, token.expires_at, token.scopes, token.allowed_urls) == ("Bearer", None, (), ())
    assert token.valid_for(10**9)


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        ("not_found", client.ConnectionNotFoundError),
        ("not_connected", client.ConnectionNotConnectedError),
        ("reauthorization_required", client.ReauthorizationRequiredError),
        ("provider_unavailable", client.ProviderUnavailableError),
        ("service_unavailable", client.ServiceUnavailableError),
        ("invalid_request", client.InvalidTokenRequestError),
        ("internal_error", client.TokenServiceError),
        ("a_code_from_a_newer_service", client.TokenServiceError),
    ],
)
def test_each_error_code_raises_its_type(code: str, error_type: type[client.TokenServiceError]) -> None:
    service = FakeTokenService()
    service.answers.append({"error": {"code": code, "message": "told by the service", "retry_after_seconds": 30}})
    with pytest.raises(client.TokenServiceError) as raised:
        client.get_access_token("acme", "con_1", lambda_client=service)
    assert type(raised.value) is error_type
    assert (raised.value.message, raised.value.retry_after) == ("told by the service", 30)


def test_an_error_without_retry_after() -> None:
    service = FakeTokenService()
    service.answers.append({"error": {"code": "not_connected", "message": "authorize it first"}})
    with pytest.raises(client.ConnectionNotConnectedError) as raised:
        client.get_access_token("acme", "con_1", lambda_client=service)
    assert raised.value.retry_after is None


def test_a_failed_invocation_is_a_token_service_error() -> None:
    service = FakeTokenService()
    service.function_error = "Unhandled"
    with pytest.raises(client.TokenServiceError) as raised:
        client.get_access_token("acme", "con_1", lambda_client=service)
    assert type(raised.value) is client.TokenServiceError
    assert raised.value.message == "the token service failed"


def test_the_token_is_not_in_its_repr() -> None:
    token = client.get_access_token("acme", "con_1", lambda_client=FakeTokenService())
    assert "token-1" not in repr(token)


def test_validity_window() -> None:
    soon = client.AccessToken("t", "Bearer", datetime.fromtimestamp(datetime.now(UTC).timestamp() + 30, UTC), (), ())
    assert soon.valid_for(10)
    assert not soon.valid_for(60)
