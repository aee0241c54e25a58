"""The local development signing key, bearer tokens for the local API, and their verification.

The key is an RSA key in ``<state dir>/jwt-signing-key.pem``, created on first use. Tokens are
RS256 JWTs with the ``kid`` of that key; the local API gateway checks them exactly as the HTTP API
JWT authorizer checks tokens against its issuer's JWKS.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_FILE_NAME = "jwt-signing-key.pem"


@dataclass(frozen=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey
    kid: str

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    def jwk(self) -> dict[str, str]:
        numbers = self.public_key.public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": _b64_uint(numbers.n),
            "e": _b64_uint(numbers.e),
        }


def _b64_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint: stable for the key, different for any other key."""
    numbers = public_key.public_numbers()
    canonical = json.dumps({"e": _b64_uint(numbers.e), "kty": "RSA", "n": _b64_uint(numbers.n)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def generate_key() -> SigningKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(private_key, key_id(private_key.public_key()))


def load_or_create_key(state_dir: Path) -> SigningKey:
    """The state dir's signing key; created atomically on first use (safe against concurrent callers)."""
    path = state_dir / KEY_FILE_NAME
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        key = generate_key()
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        temporary = state_dir / f".{KEY_FILE_NAME}.{os.getpid()}.{uuid.uuid4().hex}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
        try:
            os.link(temporary, path)  # fails if another process won the race; theirs is used
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return SigningKey(loaded, key_id(loaded.public_key()))


def mint(
    key: SigningKey,
    *,
    issuer: str,
    audience: str | Sequence[str],
    subject: str,
    tenant_claim: str,
    tenant_id: str,
    expires_in: int = 3600,
    claims: Mapping[str, Any] | None = None,
) -> str:
    """A bearer token. ``claims`` are added last; a claim given as ``None`` is removed."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience if isinstance(audience, str) else list(audience),
        "iat": now,
        "nbf": now,
        "exp": now + expires_in,
        "jti": uuid.uuid4().hex,
        tenant_claim: tenant_id,
    }
    if isinstance(payload["aud"], list) and len(payload["aud"]) == 1:
        payload["aud"] = payload["aud"][0]
    for name, value in (claims or {}).items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return jwt.encode(payload, key.private_key, algorithm="RS256", headers={"kid": key.kid})


class InvalidToken(Exception):
    """Why the authorizer rejects a token (shown in the WWW-Authenticate header, never to the function)."""


def verify(
    token: str, keys: Sequence[SigningKey], *, issuer: str, audiences: Sequence[str], now: float | None = None
) -> dict[str, Any]:
    """The checks of an HTTP API JWT authorizer: kid/alg, RS256 signature, iss, aud|client_id, exp, nbf, iat."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as error:
        raise InvalidToken("the token is malformed") from error
    if header.get("alg") != "RS256":
        raise InvalidToken("unsupported signing algorithm")
    key = next((candidate for candidate in keys if candidate.kid == header.get("kid")), None)
    if key is None:
        raise InvalidToken("no matching key for kid")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.public_key,
            algorithms=["RS256"],
            options={"verify_aud": False, "verify_iss": False, "verify_exp": False, "verify_nbf": False},
        )
    except jwt.PyJWTError as error:
        raise InvalidToken("signature verification failed") from error
    current = time.time() if now is None else now
    if claims.get("iss") != issuer:
        raise InvalidToken("the token has an invalid issuer")
    audience = claims.get("aud", claims.get("client_id"))
    presented = audience if isinstance(audience, list) else [audience]
    if not any(isinstance(item, str) and item in audiences for item in presented):
        raise InvalidToken("the token does not have a valid audience")
    expires = claims.get("exp")
    if not isinstance(expires, int | float) or isinstance(expires, bool) or expires <= current:
        raise InvalidToken("the token has expired" if isinstance(expires, int | float) else "exp is missing")
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is not None and (not isinstance(value, int | float) or value > current):
            raise InvalidToken(f"the token is not valid yet ({name})")
    return claims


def scope_claim(scopes: Sequence[str]) -> dict[str, Any]:
    """The claims that give a token these scopes: a space-separated ``scope`` (none without scopes)."""
    return {"scope": " ".join(scopes) if scopes else None}


def token_scopes(claims: Mapping[str, Any]) -> list[str]:
    """A token's scopes as an HTTP API JWT authorizer reads them: ``scope`` (space-separated) or ``scp``."""
    scope = claims.get("scope", claims.get("scp"))
    if isinstance(scope, str):
        return scope.split()
    if isinstance(scope, list):
        return [str(item) for item in scope]
    return []


def flatten_claims(claims: Mapping[str, Any]) -> dict[str, str]:
    """Claims as API Gateway hands them to the function: every value a string, lists as ``[a b]``."""

    def render(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return value
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, list):
            return "[" + " ".join(render(item) for item in value) + "]"
        if isinstance(value, dict):
            return json.dumps(value, separators=(",", ":"))
        return str(value)

    return {name: render(value) for name, value in claims.items()}
