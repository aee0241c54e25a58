"""Request and response models of the REST API (separate from the storage records)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from oauth_connections.core.errors import UnsafeUrlError, ValidationFailedError
from oauth_connections.oauth import token_endpoint
from oauth_connections.profiles import catalog
from oauth_connections.security.netguard import check_url
from oauth_connections.security.policy import url_policy

type TokenAuthMethod = Literal[
    "client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt", "none"
]
type GrantType = Literal["authorization_code", "client_credentials"]
type ConnectionStatus = Literal["pending", "connected", "reauthorization_required", "error"]

RESERVED_AUTHORIZE_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
        "nonce",
        "request",
        "request_uri",
    }
)


# Callback parameters of the protocol, and token fields that are secrets: never kept as metadata.
RESERVED_CALLBACK_PARAMS = frozenset({"code", "state", "iss", "error", "error_description", "error_uri"})
SECRET_TOKEN_FIELDS = frozenset({"access_token", "refresh_token", "id_token", "client_secret"})


def _safe_url(value: str) -> str:
    try:
        return check_url(value, url_policy())
    except UnsafeUrlError as error:
        raise PydanticCustomError(error.code, error.message) from error


def _allowed_url(value: str) -> str:
    """A URL, or a template `{name}/path` whose host a kept URL (a metadata rule's value) supplies."""
    if not value.startswith("{"):
        return _safe_url(value)
    if token_endpoint.url_template_parts(value) is None:
        raise PydanticCustomError(
            "invalid_url_template",
            "a template must be {name} of a kept URL, optionally followed by a plain /path without dot segments",
        )
    return value


def check_url_templates(allowed_urls: list[str], quirks: ProviderQuirks) -> None:
    """A template may name only a kept value that is checked as a URL (use api_base or token_origin)."""
    urls = {rule.name for rule in quirks.response_metadata + quirks.callback_metadata if rule.use != "value"}
    for entry in allowed_urls:
        parts = token_endpoint.url_template_parts(entry)
        if parts is not None and parts[0] not in urls:
            raise ValueError(
                f"allowed_urls entry {entry!r} names no kept URL: {parts[0]} must be a response or callback "
                "metadata rule with use api_base or token_origin"
            )


def _params_allowed(value: dict[str, str]) -> dict[str, str]:
    clash = RESERVED_AUTHORIZE_PARAMS.intersection(k.lower() for k in value)
    if clash:
        raise ValueError(f"parameters set by the service cannot be overridden: {', '.join(sorted(clash))}")
    return value


def _token_params_allowed(value: dict[str, str]) -> dict[str, str]:
    """Extra body parameters; only redirect_uri may be repeated, and only as the `{redirect_uri}` placeholder."""
    clash = token_endpoint.PROTOCOL_TOKEN_PARAMS.intersection(
        k.lower()
        for k, v in value.items()
        if not (k == "redirect_uri" and v == token_endpoint.REDIRECT_URI_PLACEHOLDER)
    )
    if clash:
        raise ValueError(f"parameters set by the protocol cannot be overridden: {', '.join(sorted(clash))}")
    odd = sorted(
        k
        for k, v in value.items()
        if v.startswith("{")
        and v != token_endpoint.REDIRECT_URI_PLACEHOLDER
        and not token_endpoint.CALLBACK_PLACEHOLDER.fullmatch(v)
    )
    if odd:
        raise ValueError(f"a value in braces must be {{redirect_uri}} or {{callback.<name>}}: {', '.join(odd)}")
    return value


def _token_headers_allowed(value: dict[str, str]) -> dict[str, str]:
    clash = token_endpoint.PROTOCOL_TOKEN_HEADERS.intersection(k.lower() for k in value)
    if clash or any(k.lower().startswith(("proxy-", "sec-")) for k in value):
        named = clash or {k.lower() for k in value if k.lower().startswith(("proxy-", "sec-"))}
        raise ValueError(f"headers of the protocol or its security cannot be set: {', '.join(sorted(named))}")
    return value


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as error:
        raise ValueError(f"not a regular expression: {error}") from error
    return value


def _no_secret_path(value: str) -> str:
    if SECRET_TOKEN_FIELDS.intersection(value.lower().split(".")):
        raise ValueError("a token or secret is never kept as metadata")
    return value


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Description = Annotated[str, StringConstraints(max_length=1000)]
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^[\x21-\x7e]+$")]
ClientSecret = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
SafeUrl = Annotated[str, StringConstraints(min_length=1, max_length=2048), AfterValidator(_safe_url)]
AllowedUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2048),
    AfterValidator(_allowed_url),
    Field(description="A URL the token may be sent under, or `{name}/path` under a kept URL (e.g. {instance_url})"),
]
Scope = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$")]
ParamName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
ParamValue = Annotated[str, StringConstraints(max_length=1024)]
ExtraParams = Annotated[dict[ParamName, ParamValue], Field(max_length=20), AfterValidator(_params_allowed)]
TokenParams = Annotated[dict[ParamName, ParamValue], Field(max_length=20), AfterValidator(_token_params_allowed)]
HeaderName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$")]
HeaderValue = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[\x20-\x7e]+$")]
TokenHeaders = Annotated[dict[HeaderName, HeaderValue], Field(max_length=10), AfterValidator(_token_headers_allowed)]
FieldPath = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}(\.[A-Za-z][A-Za-z0-9_-]{0,63}){0,3}$")
]
AnchoredPattern = Annotated[
    str, StringConstraints(min_length=3, max_length=300, pattern=r"^\^.*\$$"), AfterValidator(_compiles)
]
ErrorCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:\-]{1,100}$")]
TokenPath = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,4}$")
]
ProviderId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,39}$")]
# RFC 7515 x5t#S256: the base64url SHA-256 of a DER certificate, 32 bytes in 43 characters (the last one
# carries two bits of padding, so only these 16 letters can end it).
Thumbprint = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")]
ConfigName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
ConfigValue = Annotated[str, StringConstraints(max_length=200)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MetadataField(StrictModel):
    """A value of the token response (dotted path) or of the callback (query parameter) to keep."""

    name: Annotated[FieldPath, AfterValidator(_no_secret_path)]
    use: Literal["api_base", "token_origin", "value"] = Field(
        default="value",
        description="api_base: the API base URL (GetTokenFunction returns it as `api_base`); token_origin: "
        "token requests go to this scheme and host instead of token_url's; value: kept as it is. An api_base or "
        "token_origin value is checked as a URL, so allowed_urls may name it (`{instance_url}/services/`)",
    )
    pattern: AnchoredPattern = Field(description="Anchored regular expression the whole value must match")


class ProviderQuirks(StrictModel):
    """How the provider departs from the standard token endpoint; every default is the standard."""

    token_request_format: Literal["form", "json"] = "form"
    token_params: TokenParams = Field(
        default={},
        description="Extra body parameters of the code exchange. A value `{redirect_uri}` is the redirect URI; "
        "`{callback.<name>}` is a value the callback carried (a callback_metadata name); a parameter whose "
        "placeholder has no value is left out",
    )
    refresh_params: TokenParams = Field(
        default={},
        description="Extra body parameters of a refresh, with the same placeholders (`redirect_uri: "
        "{redirect_uri}` repeats the exchange's redirect URI)",
    )
    token_headers: TokenHeaders = Field(
        default={},
        description="Extra headers of every token request (e.g. Notion-Version); never Authorization, Host, "
        "Content-Type, Content-Length, Cookie, Accept or another header of the protocol or its security",
    )
    access_token_path: TokenPath | None = Field(
        default=None, description="Dotted path of the access token; its siblings are the token's other fields"
    )
    expires_in_unit: Literal["seconds", "milliseconds"] = "seconds"
    permanent_errors: Annotated[list[ErrorCode], Field(max_length=20)] = Field(
        default=[], description="Error codes that end the grant, besides invalid_grant and the client's"
    )
    response_metadata: Annotated[list[MetadataField], Field(max_length=10)] = []
    callback_metadata: Annotated[list[MetadataField], Field(max_length=10)] = []

    @model_validator(mode="after")
    def _callback_names_free(self) -> ProviderQuirks:
        clash = RESERVED_CALLBACK_PARAMS.intersection(f.name for f in self.callback_metadata)
        if clash:
            raise ValueError(f"callback parameters of the protocol are not kept: {', '.join(sorted(clash))}")
        if sum(f.use == "token_origin" for f in self.callback_metadata + self.response_metadata) > 1:
            raise ValueError("at most one value can name the token origin")
        kept = {f.name for f in self.callback_metadata}
        for kind in ("token_params", "refresh_params"):
            for name, value in getattr(self, kind).items():
                placeholder = token_endpoint.CALLBACK_PLACEHOLDER.fullmatch(value)
                if placeholder is not None and placeholder[1] not in kept:
                    raise ValueError(
                        f"{kind}.{name} names {placeholder[1]}, which is no callback_metadata of the connection"
                    )
        return self


class ConnectionSettings(StrictModel):
    """Fields a tenant may set; PATCH takes any subset of them."""

    name: Name
    description: Description = ""
    client_id: ClientId
    client_secret: ClientSecret | None = Field(
        default=None,
        description="Write-only; never returned. For private_key_jwt the private key (PEM or JWK, RSA or EC; a JWK's "
        "kid and x5t#S256 go into the assertion's header)",
    )
    certificate_thumbprint: Thumbprint | None = Field(
        default=None,
        description="Write-only, private_key_jwt only: the SHA-256 thumbprint of the key's certificate (base64url, "
        "43 characters), sent as the assertion's x5t#S256 header for providers that match the key by it",
    )
    issuer: SafeUrl | None = Field(
        default=None, description="Issuer to discover the endpoints from (RFC 8414 / OpenID discovery)"
    )
    authorization_url: SafeUrl | None = None
    token_url: SafeUrl | None = Field(default=None, description="Required unless discovered from the issuer")
    revocation_url: SafeUrl | None = None
    refresh_url: SafeUrl | None = Field(default=None, description="Where refreshes go when not to token_url")
    scopes: Annotated[list[Scope], Field(max_length=100)] = []
    scope_delimiter: Literal[" ", ","] = " "
    token_auth_method: TokenAuthMethod = "client_secret_basic"
    grant_type: GrantType = Field(
        default="authorization_code", description="client_credentials connects without a browser"
    )
    use_pkce: bool = True
    extra_authorize_params: ExtraParams = {}
    allowed_urls: Annotated[list[AllowedUrl], Field(max_length=20)] = []
    test_url: SafeUrl | None = Field(
        default=None,
        description="A URL under allowed_urls that answers 2xx to a GET with a valid token (a userinfo or "
        '"me" endpoint): POST /connections/{id}/test calls it',
    )
    quirks: ProviderQuirks = Field(default_factory=ProviderQuirks)


class ConnectionCreate(ConnectionSettings):
    provider: ProviderId | None = Field(
        default=None, description="A catalog provider (GET /providers) whose settings fill in what is not given"
    )
    config: Annotated[dict[ConfigName, ConfigValue], Field(max_length=5)] = Field(
        default={}, description="The provider's config values (its account's subdomain, ...)"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_profile(cls, data: Any) -> Any:
        """A provider's profile, rendered with the config values, under the tenant's own settings."""
        if not isinstance(data, dict) or data.get("provider") is None:
            return data
        config = data.get("config") or {}
        if not isinstance(data["provider"], str) or not isinstance(config, dict):
            return data  # the field validation says what is wrong
        try:
            profile = catalog.connection_fields(data["provider"], config, url_policy())
        except catalog.ProfileError as error:
            raise PydanticCustomError(error.code, error.message) from error
        return profile | data

    @model_validator(mode="after")
    def _secret_matches_auth_method(self) -> ConnectionCreate:
        check_secret_for_method(self.token_auth_method, has_secret=self.client_secret is not None)
        check_signing_key(self.token_auth_method, self.client_secret)
        check_thumbprint(self.token_auth_method, self.certificate_thumbprint)
        check_grant(self.grant_type, self.token_auth_method)
        check_url_templates(self.allowed_urls, self.quirks)
        if self.token_url is None and self.issuer is None:
            raise ValueError("token_url is required unless an issuer is given")
        return self


class ConnectionUpdate(StrictModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"minProperties": 1})

    name: Name | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None
    client_id: ClientId | SkipJsonSchema[None] = None
    client_secret: ClientSecret | None = Field(default=None, description="Write-only; null removes it")
    certificate_thumbprint: Thumbprint | None = Field(default=None, description="Write-only; null removes it")
    issuer: SafeUrl | None = None
    authorization_url: SafeUrl | None = None
    token_url: SafeUrl | SkipJsonSchema[None] = None
    revocation_url: SafeUrl | None = None
    refresh_url: SafeUrl | None = None
    scopes: Annotated[list[Scope], Field(max_length=100)] | SkipJsonSchema[None] = None
    scope_delimiter: Literal[" ", ","] | SkipJsonSchema[None] = None
    token_auth_method: TokenAuthMethod | SkipJsonSchema[None] = None
    grant_type: GrantType | SkipJsonSchema[None] = None
    use_pkce: bool | SkipJsonSchema[None] = None
    extra_authorize_params: ExtraParams | SkipJsonSchema[None] = None
    allowed_urls: Annotated[list[AllowedUrl], Field(max_length=20)] | SkipJsonSchema[None] = None
    test_url: SafeUrl | None = Field(default=None, description="null removes it")
    quirks: ProviderQuirks | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _required_fields_not_null(self) -> ConnectionUpdate:
        nullable = {
            "client_secret",
            "certificate_thumbprint",
            "issuer",
            "authorization_url",
            "revocation_url",
            "refresh_url",
            "test_url",
        }
        nulled = sorted(f for f in self.model_fields_set - nullable if getattr(self, f) is None)
        if nulled:
            raise ValueError(f"fields cannot be null: {', '.join(nulled)}")
        if not self.model_fields_set:
            raise ValueError("no field to update")
        if self.token_auth_method is not None:
            check_signing_key(self.token_auth_method, self.client_secret)
        return self


def check_signing_key(method: str, secret: str | None) -> None:
    """A private_key_jwt key is parsed when it is set, so a bad one is a 422, not a failed sign-in."""
    if method == "private_key_jwt" and secret is not None:
        token_endpoint.signing_key(secret)


def check_thumbprint(method: str, thumbprint: str | None) -> None:
    if thumbprint is not None and method != "private_key_jwt":
        raise ValueError("certificate_thumbprint goes with token_auth_method 'private_key_jwt' only")


def check_grant(grant_type: str, method: str) -> None:
    if grant_type == "client_credentials" and method == "none":
        raise ValueError("the client_credentials grant needs client authentication (a client_secret)")


def check_public_client_pkce(method: str, *, use_pkce: bool) -> None:
    """A public client has no secret that ties a code to whoever redeems it: without PKCE a code
    stolen or injected into the callback connects the attacker's account."""
    if method == "none" and not use_pkce:
        raise ValidationFailedError(
            "token_auth_method 'none' (a public client) requires use_pkce: true", code="pkce_required"
        )


def check_secret_for_method(method: str, *, has_secret: bool) -> None:
    if method == "none" and has_secret:
        raise ValueError("token_auth_method 'none' takes no client_secret")
    if method != "none" and not has_secret:
        raise ValueError(f"token_auth_method {method!r} needs a client_secret")


class ConnectionTestResult(BaseModel):
    ok: bool = Field(description="The test URL answered 2xx to a GET with the connection's token")
    status: int | None = Field(description="The HTTP status it answered; null when no answer came")
    elapsed_ms: int
    checked_at: datetime
    error: str | None = Field(
        default=None, description="Why no answer came: url_not_allowed, timeout, rate_limited, provider_unavailable..."
    )


class ConnectionOut(BaseModel):
    id: str
    name: str
    description: str
    client_id: str
    has_client_secret: bool
    has_certificate_thumbprint: bool = Field(
        default=False, description="private_key_jwt: a certificate thumbprint is set (it is never returned)"
    )
    issuer: str | None
    authorization_url: str | None
    token_url: str
    revocation_url: str | None
    refresh_url: str | None = None
    scopes: list[str]
    scope_delimiter: str
    token_auth_method: TokenAuthMethod
    grant_type: GrantType
    use_pkce: bool | None = Field(description="null for client_credentials, which has no authorization step")
    extra_authorize_params: dict[str, str]
    allowed_urls: list[str]
    test_url: str | None = None
    last_test: ConnectionTestResult | None = Field(default=None, description="The latest connection test")
    provider: str | None = None
    config: dict[str, str] = {}
    quirks: ProviderQuirks
    metadata: dict[str, str] = Field(
        default={}, description="Values kept from the provider's token response and callback (never a secret)"
    )
    status: ConnectionStatus
    status_reason: str | None = Field(
        default=None, description="Why the status is what it is (an OAuth error code, `settings_changed`, ...)"
    )
    redirect_uri: str | None = Field(
        description="Register this callback URL at the provider; null for client_credentials (no browser)"
    )
    granted_scopes: list[str] | None = None
    expires_at: datetime | None = None
    connected_at: datetime | None = None
    refreshed_at: datetime | None = Field(default=None, description="When the tokens were last refreshed")
    last_used_at: datetime | None = Field(
        default=None,
        description="When a function last retrieved a token or made a call with it, to ten minutes; null if never",
    )
    created_at: datetime
    updated_at: datetime
    version: int = Field(
        description="Version of the settings, also sent as the ETag; token refreshes and status changes keep it"
    )


class ConnectionPage(BaseModel):
    items: list[ConnectionOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class AuthorizeRequest(StrictModel):
    return_url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = Field(
        default=None,
        description="Where the browser returns after the provider; must be under an allowed frontend origin "
        "(required for the authorization_code grant)",
    )
    display: Literal["page", "popup"] = Field(
        default="page",
        description="How the browser was sent: `page` (a tab; the callback redirects to return_url) or `popup` "
        "(the callback posts an `oauth_connection` message to window.opener at return_url's origin and closes)",
    )


class AuthorizeResponse(BaseModel):
    redirect_url: str | None = Field(
        default=None, description="Navigate the browser here; single-use, expires at expires_at"
    )
    expires_at: datetime | None = Field(default=None, description="When redirect_url expires")
    status: ConnectionStatus | None = Field(
        default=None, description="client_credentials connections: the status after fetching the token"
    )
    token_expires_at: datetime | None = Field(default=None, description="client_credentials: token expiry")
