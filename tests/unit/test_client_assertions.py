"""RFC 7523 client authentication (private_key_jwt, client_secret_jwt) against a scripted provider that
verifies every assertion with the registered key and refuses a replayed jti, on the exchange and the refresh."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from oauth_connections.connections.models import ConnectionCreate
from oauth_connections.oauth import token_endpoint
from oauth_connections.oauth.token_endpoint import Quirks
from oauth_connections.security.netguard import UrlPolicy
from tests.conftest import InProcessApi
from tests.support.token_endpoint import Recorded, Scripted, ScriptedTokenEndpoint

LOOPBACK = UrlPolicy(allow_insecure_loopback=True)
RSA = RSAKey.generate_key(2048)
EC = ECKey.generate_key("P-256")
SHARED = "a-client-secret-of-at-least-32-bytes!!"
TOKENS = {"access_token": "a", "refresh_token": "r", "expires_in": 3600}


class AssertionChecker:
    """What the provider checks: signature by the registered key, iss = sub = client id, aud = the URL
    called, a short lifetime, and a jti never seen before."""

    def __init__(self, endpoint: ScriptedTokenEndpoint, key: Any, algorithms: list[str]) -> None:
        self.endpoint, self.key, self.algorithms = endpoint, key, algorithms
        self.seen: set[str] = set()
        self.headers: list[dict[str, Any]] = []

    def __call__(self, request: Recorded) -> Scripted | None:
        refused = Scripted(401, {"error": "invalid_client"})
        if request.form.get("client_assertion_type") != token_endpoint.ASSERTION_TYPE:
            return refused
        try:
            token = jwt.decode(request.form["client_assertion"], self.key, algorithms=self.algorithms)
        except Exception:  # noqa: BLE001 - any failure to verify is a refusal
            return refused
        claims = token.claims
        self.headers.append(dict(token.header))
        aud = f"{self.endpoint.origin}{request.path}"
        if claims["iss"] != "cid" or claims["sub"] != "cid" or claims["aud"] != aud:
            return refused
        if not 0 < claims["exp"] - claims["iat"] <= 60 or claims["exp"] < time.time():
            return refused
        if claims["jti"] in self.seen:
            return refused
        self.seen.add(claims["jti"])
        return None


@pytest.fixture
def endpoint(running_endpoint: ScriptedTokenEndpoint) -> Iterator[ScriptedTokenEndpoint]:
    running_endpoint.reset()
    yield running_endpoint
    running_endpoint.verify = None


def rsa_jwk_with_thumbprint() -> str:
    data = RSA.as_dict(private=True)
    return json.dumps(data | {"kid": "k1", "x5t#S256": "dGh1bWJwcmludA"})


@pytest.mark.parametrize(
    ("method", "secret", "public", "algorithms", "header"),
    [
        ("private_key_jwt", RSA.as_pem(private=True).decode(), RSA, ["RS256"], {}),
        ("private_key_jwt", rsa_jwk_with_thumbprint(), RSA, ["RS256"], {"kid": "k1", "x5t#S256": "dGh1bWJwcmludA"}),
        ("private_key_jwt", EC.as_pem(private=True).decode(), EC, ["ES256"], {}),
        ("private_key_jwt", json.dumps(EC.as_dict(private=True)), EC, ["ES256"], {}),
        ("client_secret_jwt", SHARED, OctKey.import_key(SHARED), ["HS256"], {}),
    ],
)
@pytest.mark.parametrize("request_format", ["form", "json"])
def test_every_request_carries_a_fresh_assertion_the_provider_verifies(
    endpoint: ScriptedTokenEndpoint,
    method: str,
    secret: str,
    public: Any,
    algorithms: list[str],
    header: dict[str, str],
    request_format: str,
) -> None:
    checker = AssertionChecker(endpoint, public, algorithms)
    endpoint.verify = checker
    quirks = Quirks(token_request_format="json") if request_format == "json" else Quirks()
    client = token_endpoint.ClientSettings(
        client_id="cid", client_secret=secret, token_url=endpoint.url, auth_method=method, quirks=quirks
    )
    endpoint.queue(Scripted(body=TOKENS), Scripted(body=TOKENS))
    first = token_endpoint.exchange_code(
        client, code="c", redirect_uri="https://api.example.com/cb", code_verifier=None, policy=LOOPBACK, timeout=5
    )
    token_endpoint.refresh(client, first, policy=LOOPBACK, timeout=5)
    assert len(checker.seen) == 2  # two requests, two jti
    assert all(header.items() <= seen.items() for seen in checker.headers)
    assert all("client_secret" not in r.form and "Authorization" not in r.headers for r in endpoint.requests)

    replayed = endpoint.requests[-1].form  # the same assertion once more: the provider refuses it
    again = requests.post(endpoint.url, data=replayed, timeout=5)
    assert again.status_code == 401 and again.json() == {"error": "invalid_client"}


def test_an_assertion_signed_by_another_key_is_refused(endpoint: ScriptedTokenEndpoint) -> None:
    endpoint.verify = AssertionChecker(endpoint, RSA, ["RS256"])
    other = RSAKey.generate_key(2048).as_pem(private=True).decode()
    client = token_endpoint.ClientSettings(
        client_id="cid", client_secret=other, token_url=endpoint.url, auth_method="private_key_jwt"
    )
    with pytest.raises(token_endpoint.ProviderRejectedError) as refused:
        token_endpoint.exchange_code(
            client, code="c", redirect_uri="https://x.example/cb", code_verifier=None, policy=LOOPBACK, timeout=5
        )
    assert refused.value.error == "invalid_client" and refused.value.permanent


@pytest.mark.parametrize(
    "secret", ["not a key", RSA.as_pem(private=False).decode(), json.dumps(EC.as_dict(private=False)), SHARED]
)
def test_a_private_key_that_cannot_sign_is_refused_on_create(api: InProcessApi, secret: str) -> None:
    body = {
        "name": f"jwt {time.time_ns()}",
        "client_id": "cid",
        "client_secret": secret,
        "token_auth_method": "private_key_jwt",
        "token_url": "https://login.example.com/token",
        "authorization_url": "https://login.example.com/authorize",
    }
    response = api.call("create_connection", body=body)
    assert response.status == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert "BEGIN" not in response.text


def test_a_private_key_is_write_only(api: InProcessApi) -> None:
    pem = RSA.as_pem(private=True).decode()
    request = {
        "name": f"jwt {time.time_ns()}",
        "client_id": "cid",
        "client_secret": pem,
        "token_auth_method": "private_key_jwt",
        "token_url": "https://login.example.com/token",
        "authorization_url": "https://login.example.com/authorize",
    }
    ConnectionCreate.model_validate(request)
    created = api.call("create_connection", body=request)
    assert created.status == 201, created.text
    assert created.json()["has_client_secret"] is True and "PRIVATE KEY" not in created.text


def test_revocation_authenticates_with_an_assertion_too(endpoint: ScriptedTokenEndpoint) -> None:
    from oauth_connections.oauth import revocation

    checker = AssertionChecker(endpoint, EC, ["ES256"])
    endpoint.verify = checker
    client = token_endpoint.ClientSettings(
        client_id="cid",
        client_secret=EC.as_pem(private=True).decode(),
        token_url=endpoint.url,
        auth_method="private_key_jwt",
    )
    endpoint.queue(Scripted(body={}))
    revocation.revoke(client, endpoint.origin + "/revoke", "r", "refresh_token", policy=LOOPBACK, timeout=5)
    (revoked,) = endpoint.requests
    assert revoked.path == "/revoke" and revoked.form["token"] == "r"
    assert len(checker.seen) == 1


def thumbprint_of(der: bytes) -> str:
    import base64
    import hashlib

    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


THUMBPRINT = thumbprint_of(b"a DER certificate")


def pem_connection(**fields: Any) -> dict[str, Any]:
    return {
        "name": f"jwt {time.time_ns()}",
        "client_id": "cid",
        "client_secret": RSA.as_pem(private=True).decode(),
        "token_auth_method": "private_key_jwt",
        "token_url": "https://login.example.com/token",
        "authorization_url": "https://login.example.com/authorize",
        **fields,
    }


def test_a_certificate_thumbprint_is_the_assertions_x5t_header(endpoint: ScriptedTokenEndpoint) -> None:
    checker = AssertionChecker(endpoint, RSA, ["RS256"])
    endpoint.verify = checker
    client = token_endpoint.ClientSettings(
        client_id="cid",
        client_secret=RSA.as_pem(private=True).decode(),
        token_url=endpoint.url,
        auth_method="private_key_jwt",
        certificate_thumbprint=THUMBPRINT,
    )
    endpoint.queue(Scripted(body=TOKENS), Scripted(body=TOKENS))
    first = token_endpoint.exchange_code(
        client, code="c", redirect_uri="https://api.example.com/cb", code_verifier=None, policy=LOOPBACK, timeout=5
    )
    token_endpoint.refresh(client, first, policy=LOOPBACK, timeout=5)
    assert [header["x5t#S256"] for header in checker.headers] == [THUMBPRINT, THUMBPRINT]
    assert len(checker.seen) == 2


def test_a_certificate_thumbprint_is_write_only(api: InProcessApi) -> None:
    created = api.call("create_connection", body=pem_connection(certificate_thumbprint=THUMBPRINT))
    assert created.status == 201, created.text
    assert created.json()["has_certificate_thumbprint"] is True and THUMBPRINT not in created.text
    connection_id = created.json()["id"]
    assert THUMBPRINT not in api.call("get_connection", connection_id=connection_id).text
    removed = api.call("update_connection", connection_id=connection_id, body={"certificate_thumbprint": None})
    assert removed.status == 200, removed.text
    assert removed.json()["has_certificate_thumbprint"] is False
    again = api.call("update_connection", connection_id=connection_id, body={"certificate_thumbprint": THUMBPRINT})
    assert again.status == 200 and again.json()["has_certificate_thumbprint"] is True
    assert THUMBPRINT not in api.call("list_connection_activity", connection_id=connection_id).text


@pytest.mark.parametrize(
    "thumbprint",
    [
        THUMBPRINT[:-1],  # 42 characters
        THUMBPRINT + "A",  # 44
        THUMBPRINT[:-1] + "=",  # padding
        THUMBPRINT[:-1] + "+",  # base64, not base64url
        THUMBPRINT[:-1] + "B",  # a last letter whose padding bits are not zero
        "a" * 40 + "==",
        "ab:cd:ef",  # a hex SHA-1 thumbprint as some portals show it
    ],
)
def test_a_malformed_thumbprint_is_a_422(api: InProcessApi, thumbprint: str) -> None:
    response = api.call("create_connection", body=pem_connection(certificate_thumbprint=thumbprint))
    assert response.status == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert "certificate_thumbprint" in response.text


def test_a_thumbprint_goes_with_private_key_jwt_only(api: InProcessApi) -> None:
    body = pem_connection(certificate_thumbprint=THUMBPRINT, token_auth_method="client_secret_post")
    body["client_secret"] = "s"
    response = api.call("create_connection", body=body)
    assert response.status == 422, response.text
    assert "private_key_jwt' only" in response.text
    created = api.call("create_connection", body=pem_connection(certificate_thumbprint=THUMBPRINT))
    switched = api.call(
        "update_connection",
        connection_id=created.json()["id"],
        body={"token_auth_method": "client_secret_post", "client_secret": "s"},
    )
    assert switched.status == 422, switched.text
    assert "private_key_jwt' only" in switched.json()["error"]["message"]
