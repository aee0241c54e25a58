"""A real OAuth 2.0 authorization server (provider/server.mjs, oidc-provider) run as a subprocess.

Usage::

    with OidcProvider(standard_clients("http://127.0.0.1:8080/callback")) as op:
        op.metadata["token_endpoint"]
        op.introspect(token, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)
        op.stats()["token_requests"]["by_grant_type"]

The server's own login and consent pages accept any login name with any password.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlencode

import requests

from devstack.config import node_executable

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVIDER_DIR = REPO_ROOT / "provider"
SERVER_SCRIPT = PROVIDER_DIR / "server.mjs"

BASIC_CLIENT_ID = "basic-client"
BASIC_CLIENT_SECRET = "basic-client-secret"
POST_CLIENT_ID = "post-client"
POST_CLIENT_SECRET = "post-client-secret"
PUBLIC_CLIENT_ID = "public-client"
SERVICE_CLIENT_ID = "service-client"
SERVICE_CLIENT_SECRET = "service-client-secret"

DEFAULT_SCOPES: tuple[str, ...] = ("openid", "offline_access", "api.read", "api.write")

AuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]

_READY_PREFIX = "provider listening on "
_HTTP_TIMEOUT = 10.0


class ProviderError(RuntimeError):
    """The provider process failed to start or answered unexpectedly."""


def standard_clients(redirect_uri: str | Sequence[str]) -> list[dict[str, Any]]:
    """The standard client set: one client per token endpoint auth method, plus a service client.

    - ``basic-client``: confidential, client_secret_basic, code (+ optional PKCE) and refresh_token
    - ``post-client``: confidential, client_secret_post, code (+ optional PKCE) and refresh_token
    - ``public-client``: public (auth method none), code with required PKCE S256, refresh_token
    - ``service-client``: confidential, client_secret_basic, client_credentials only
    """
    redirect_uris = [redirect_uri] if isinstance(redirect_uri, str) else list(redirect_uri)
    code_flow = {
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "redirect_uris": redirect_uris,
    }
    return [
        {
            "client_id": BASIC_CLIENT_ID,
            "client_name": "Basic test app",
            "client_secret": BASIC_CLIENT_SECRET,
            "token_endpoint_auth_method": "client_secret_basic",
            **code_flow,
        },
        {
            "client_id": POST_CLIENT_ID,
            "client_secret": POST_CLIENT_SECRET,
            "token_endpoint_auth_method": "client_secret_post",
            **code_flow,
        },
        {
            "client_id": PUBLIC_CLIENT_ID,
            "token_endpoint_auth_method": "none",
            **code_flow,
        },
        {
            "client_id": SERVICE_CLIENT_ID,
            "client_secret": SERVICE_CLIENT_SECRET,
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["client_credentials"],
            "response_types": [],
            "redirect_uris": [],
        },
    ]


def make_pkce() -> tuple[str, str]:
    """A fresh PKCE pair: ``(code_verifier, code_challenge)`` for the S256 method."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


def client_auth(
    client_id: str, client_secret: str | None, auth_method: AuthMethod
) -> tuple[dict[str, str], tuple[str, str] | None]:
    """Form fields and HTTP basic credentials that authenticate a client by ``auth_method``."""
    if auth_method == "client_secret_basic":
        if client_secret is None:
            raise ValueError("client_secret_basic needs a client secret")
        return {}, (client_id, client_secret)
    if auth_method == "client_secret_post":
        if client_secret is None:
            raise ValueError("client_secret_post needs a client secret")
        return {"client_id": client_id, "client_secret": client_secret}, None
    return {"client_id": client_id}, None


def _terminate(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class OidcProvider:
    """Runs ``node provider/server.mjs`` on a free loopback port for the duration of a test."""

    def __init__(
        self,
        clients: Sequence[Mapping[str, Any]] = (),
        *,
        scopes: Sequence[str] = DEFAULT_SCOPES,
        access_token_ttl: int = 3600,
        refresh_token_ttl: int | None = None,
        token_endpoint_delay_ms: int = 0,
        extra_config: Mapping[str, Any] | None = None,
        port: int = 0,
        startup_timeout: float = 30.0,
        node: str | None = None,
    ) -> None:
        config: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "clients": [dict(c) for c in clients],
            "scopes": list(scopes),
            "access_token_ttl": access_token_ttl,
            "token_endpoint_delay_ms": token_endpoint_delay_ms,
        }
        if refresh_token_ttl is not None:
            config["refresh_token_ttl"] = refresh_token_ttl
        config.update(extra_config or {})
        self.config = config
        self._startup_timeout = startup_timeout
        self._node = node
        self._process: subprocess.Popen[str] | None = None
        self._output: deque[str] = deque(maxlen=500)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[str]], OidcProvider] | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._issuer: str | None = None
        self._metadata: dict[str, Any] | None = None
        self._http = requests.Session()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._process is not None:
            raise ProviderError("the provider is already started")
        node = shutil.which(self._node) if self._node else node_executable()
        if node is None:
            raise ProviderError(f"{self._node or 'node'!r} not found (make setup installs it in .tools/node)")
        if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise ProviderError(f"{PROVIDER_DIR}/node_modules is missing: run `npm ci` in {PROVIDER_DIR}")

        self._tmpdir = tempfile.TemporaryDirectory(prefix="oidc-provider-")
        config_path = Path(self._tmpdir.name) / "config.json"
        config_path.write_text(json.dumps(self.config, indent=2), encoding="utf-8")

        self._process = subprocess.Popen(
            [node, str(SERVER_SCRIPT), str(config_path)],
            cwd=PROVIDER_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, "NODE_ENV": "test"},
        )
        # Safety net: the process never outlives this object or the interpreter.
        self._finalizer = weakref.finalize(self, _terminate, self._process)
        self._reader = threading.Thread(target=self._read_output, name="oidc-provider-output", daemon=True)
        self._reader.start()
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_output(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        for line in self._process.stdout:
            line = line.rstrip("\n")
            self._output.append(line)
            if self._issuer is None and line.startswith(_READY_PREFIX):
                self._issuer = line.removeprefix(_READY_PREFIX).strip()
                self._ready.set()

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._startup_timeout
        while not self._ready.wait(0.05):
            if self._process.poll() is not None:
                self._join_reader()
                raise ProviderError(
                    f"the provider exited with code {self._process.returncode} before it was ready:\n" + self.output
                )
            if time.monotonic() > deadline:
                raise ProviderError(f"the provider was not ready within {self._startup_timeout}s:\n{self.output}")
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                response = self._http.get(f"{self.issuer}/.well-known/openid-configuration", timeout=_HTTP_TIMEOUT)
                if response.status_code == 200:
                    self._metadata = response.json()
                    return
                last_error = ProviderError(f"discovery answered {response.status_code}")
            except requests.RequestException as exc:
                last_error = exc
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        raise ProviderError(f"the provider's discovery never answered ({last_error}):\n{self.output}")

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL) and remove its temporary config."""
        process, self._process = self._process, None
        if process is not None:
            _terminate(process)
            if self._finalizer is not None:
                self._finalizer.detach()
            self._join_reader()
            if process.stdout is not None:
                process.stdout.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
        self._http.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- facts -----------------------------------------------------------------------------------

    @property
    def output(self) -> str:
        """What the process printed so far (stdout and stderr, last 500 lines)."""
        return "\n".join(self._output)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def issuer(self) -> str:
        if self._issuer is None:
            raise ProviderError("the provider is not started")
        return self._issuer

    @property
    def metadata(self) -> dict[str, Any]:
        """The discovery document (``/.well-known/openid-configuration``)."""
        if self._metadata is None:
            raise ProviderError("the provider is not started")
        return self._metadata

    @property
    def authorization_endpoint(self) -> str:
        return str(self.metadata["authorization_endpoint"])

    @property
    def token_endpoint(self) -> str:
        return str(self.metadata["token_endpoint"])

    @property
    def introspection_endpoint(self) -> str:
        return str(self.metadata["introspection_endpoint"])

    @property
    def revocation_endpoint(self) -> str:
        return str(self.metadata["revocation_endpoint"])

    # -- OAuth helpers ---------------------------------------------------------------------------

    def authorization_url(
        self,
        client_id: str,
        redirect_uri: str,
        *,
        scope: str = "api.read",
        state: str | None = None,
        code_challenge: str | None = None,
        **extra: str,
    ) -> str:
        """An authorization request URL (response_type=code; PKCE S256 when a challenge is given)."""
        params: dict[str, str] = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state if state is not None else secrets.token_urlsafe(16),
        }
        if code_challenge is not None:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        params.update(extra)
        return f"{self.authorization_endpoint}?{urlencode(params)}"

    def token(
        self,
        data: Mapping[str, str],
        client_id: str,
        client_secret: str | None = None,
        *,
        auth_method: AuthMethod = "client_secret_basic",
    ) -> requests.Response:
        """POST ``data`` to the token endpoint, authenticating the client; the raw response."""
        fields, basic = client_auth(client_id, client_secret, auth_method)
        return self._http.post(self.token_endpoint, data={**data, **fields}, auth=basic, timeout=_HTTP_TIMEOUT)

    def introspect(
        self,
        token: str,
        client_id: str,
        client_secret: str,
        *,
        auth_method: AuthMethod = "client_secret_basic",
        token_type_hint: str | None = None,
    ) -> dict[str, Any]:
        """RFC 7662 introspection; a confidential client may introspect any client's tokens."""
        fields, basic = client_auth(client_id, client_secret, auth_method)
        data = {"token": token, **fields}
        if token_type_hint is not None:
            data["token_type_hint"] = token_type_hint
        response = self._http.post(self.introspection_endpoint, data=data, auth=basic, timeout=_HTTP_TIMEOUT)
        if response.status_code != 200:
            raise ProviderError(f"introspection answered {response.status_code}: {response.text}")
        result: dict[str, Any] = response.json()
        return result

    def revoke(
        self,
        token: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        auth_method: AuthMethod = "client_secret_basic",
        token_type_hint: str | None = None,
    ) -> None:
        """RFC 7009 revocation (only the token's own client may revoke it)."""
        fields, basic = client_auth(client_id, client_secret, auth_method)
        data = {"token": token, **fields}
        if token_type_hint is not None:
            data["token_type_hint"] = token_type_hint
        response = self._http.post(self.revocation_endpoint, data=data, auth=basic, timeout=_HTTP_TIMEOUT)
        if response.status_code != 200:
            raise ProviderError(f"revocation answered {response.status_code}: {response.text}")

    # -- test observability ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters kept by the server since start or the last reset, e.g.::

            {
                "token_requests": {
                    "total": 2,
                    "by_grant_type": {"refresh_token": 2},
                    "by_outcome": {"success": 1, "invalid_grant": 1},
                    "by_grant_type_and_outcome": {"refresh_token": {"success": 1, "invalid_grant": 1}},
                    "by_client": {"basic-client": 2},
                },
                "introspection_requests": {"total": 0, "active": 0, "inactive": 0, "error": 0},
                "revocation_requests": {"total": 0, "success": 0, "error": 0},
                "authorization_requests": 0,  # authorization requests that ended in a grant
                "grants_revoked": 1,  # e.g. by refresh token or code reuse
            }

        Outcomes are "success" or the OAuth error code of the answer.
        """
        response = self._http.get(f"{self.issuer}/__stats", timeout=_HTTP_TIMEOUT)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset_stats(self) -> None:
        self._http.post(f"{self.issuer}/__stats/reset", timeout=_HTTP_TIMEOUT).raise_for_status()

    def set_token_endpoint_delay(self, delay_ms: int) -> None:
        """Hold back the answers to refresh_token grants by ``delay_ms`` (0 turns it off)."""
        response = self._http.post(
            f"{self.issuer}/__config", json={"token_endpoint_delay_ms": delay_ms}, timeout=_HTTP_TIMEOUT
        )
        response.raise_for_status()


AUTH_METHOD_CLIENTS: dict[str, tuple[str, str | None]] = {
    "client_secret_basic": (BASIC_CLIENT_ID, BASIC_CLIENT_SECRET),
    "client_secret_post": (POST_CLIENT_ID, POST_CLIENT_SECRET),
    "none": (PUBLIC_CLIENT_ID, None),
}


def connection_body(issuer: str, method: str = "client_secret_basic", **extra: Any) -> dict[str, Any]:
    """The body of POST /connections for one of the standard clients, endpoints discovered from `issuer`."""
    client_id, secret = AUTH_METHOD_CLIENTS[method]
    body: dict[str, Any] = {
        "name": f"provider {method} {secrets.token_hex(4)}",
        "client_id": client_id,
        "token_auth_method": method,
        "issuer": issuer,
        "scopes": ["api.read", "api.write"],
    }
    if secret:
        body["client_secret"] = secret
    return body | extra
