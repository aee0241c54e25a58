"""Local API Gateway for the template's HTTP APIs (payload format 2.0, JWT authorizers, CORS).

Routes come from the functions' ``HttpApi`` events. Bearer tokens are checked as the JWT
authorizer checks them, against the local development key (see ``devstack.tokens``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devstack import config
from devstack.httpserver import BodyTooLarge, LocalServer, RequestHandler
from devstack.logs import LogSink
from devstack.runtime import FunctionSpec, LambdaRuntime
from devstack.template import Resolver, TemplateError, http_api_properties
from devstack.tokens import InvalidToken, SigningKey, flatten_claims, token_scopes, verify

IMPLICIT_API = "ServerlessHttpApi"
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
_TEXT_TYPES = {
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-yaml",
    "application/yaml",
    "application/graphql",
}
_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY"}


@dataclass(frozen=True)
class JwtAuthorizer:
    name: str
    issuer: str
    audiences: tuple[str, ...]
    identity_header: str = "authorization"


@dataclass(frozen=True)
class UnsupportedAuthorizer:
    name: str
    reason: str


Authorizer = JwtAuthorizer | UnsupportedAuthorizer


@dataclass
class HttpApi:
    logical_id: str
    api_id: str
    stage: str = "$default"
    cors: Mapping[str, Any] | None = None
    authorizers: dict[str, Authorizer] = field(default_factory=dict)
    default_authorizer: str | None = None


@dataclass(frozen=True)
class Route:
    api: HttpApi
    method: str  # an HTTP method or ANY
    path: str | None  # None: the $default route
    function: str  # logical id
    authorizer: Authorizer | None
    scopes: tuple[str, ...] = ()
    timeout_ms: int = config.API_INTEGRATION_TIMEOUT_MS
    payload_format: str = "2.0"

    @property
    def route_key(self) -> str:
        return "$default" if self.path is None else f"{self.method} {self.path}"

    def match(self, method: str, segments: Sequence[str]) -> tuple[tuple[int, ...], dict[str, str]] | None:
        """(specificity, path parameters) when the route matches; smaller specificity wins."""
        if self.method not in ("ANY", method):
            return None
        if self.path is None:
            return (9, 9), {}
        pattern = self.path.strip("/").split("/") if self.path != "/" else [""]
        parameters: dict[str, str] = {}
        ranks: list[int] = []
        for index, part in enumerate(pattern):
            if part.startswith("{") and part.endswith("+}"):
                rest = segments[index:]
                if not rest or not all(rest):
                    return None
                parameters[part[1:-2]] = urllib.parse.unquote("/".join(rest))
                ranks.append(2)
                return (*ranks, 0 if self.method != "ANY" else 1), parameters
            if index >= len(segments):
                return None
            if part.startswith("{") and part.endswith("}"):
                if not segments[index]:
                    return None
                parameters[part[1:-1]] = urllib.parse.unquote(segments[index])
                ranks.append(1)
            elif part != segments[index]:
                return None
            else:
                ranks.append(0)
        if len(segments) != len(pattern):
            return None
        return (*ranks, 0 if self.method != "ANY" else 1), parameters


def api_id_for(logical_id: str) -> str:
    return hashlib.sha256(f"{config.STACK_NAME}/{logical_id}".encode()).hexdigest()[:10]


def build_routes(template: Mapping[str, Any], resolver: Resolver, functions: Mapping[str, FunctionSpec]) -> list[Route]:
    apis: dict[str, HttpApi] = {}

    def api(logical_id: str) -> HttpApi:
        if logical_id not in apis:
            resource = (template.get("Resources") or {}).get(logical_id) or {"Properties": {}}
            properties = resolver.resolve(http_api_properties(template, resource))
            auth = properties.get("Auth") or {}
            authorizers: dict[str, Authorizer] = {}
            for name, definition in (auth.get("Authorizers") or {}).items():
                jwt_configuration = definition.get("JwtConfiguration")
                if jwt_configuration:
                    audience = jwt_configuration.get("audience") or []
                    source = str(definition.get("IdentitySource") or "$request.header.Authorization")
                    header = source.split(",")[0].strip()
                    header = header.removeprefix("$request.header.").lower()
                    authorizers[name] = JwtAuthorizer(
                        name,
                        str(jwt_configuration.get("issuer") or ""),
                        tuple(str(item) for item in (audience if isinstance(audience, list) else [audience])),
                        header,
                    )
                else:
                    authorizers[name] = UnsupportedAuthorizer(
                        name, "only JWT authorizers are supported by the local stack"
                    )
            stage = str(properties.get("StageName") or "$default")
            apis[logical_id] = HttpApi(
                logical_id,
                api_id_for(logical_id),
                stage,
                properties.get("CorsConfiguration") if isinstance(properties.get("CorsConfiguration"), dict) else None,
                authorizers,
                auth.get("DefaultAuthorizer"),
            )
        return apis[logical_id]

    routes: list[Route] = []
    for logical_id, spec in functions.items():
        for event in spec.events.values():
            if event.get("Type") != "HttpApi":
                continue
            properties = event.get("Properties") or {}
            api_ref = properties.get("ApiId")
            if isinstance(api_ref, dict) and "Ref" in api_ref:
                api_logical_id = str(api_ref["Ref"])
            elif api_ref is None:
                api_logical_id = IMPLICIT_API
            else:
                raise TemplateError(f"{logical_id}: HttpApi event ApiId must be a Ref to an HttpApi")
            properties = resolver.resolve({key: value for key, value in properties.items() if key != "ApiId"})
            owner = api(api_logical_id)
            method = str(properties.get("Method") or "ANY").upper()
            if method not in _METHODS:
                raise TemplateError(f"{logical_id}: unsupported HttpApi method {method}")
            path = properties.get("Path")
            auth = properties.get("Auth") or {}
            authorizer_name = auth.get("Authorizer", owner.default_authorizer)
            authorizer: Authorizer | None = None
            if authorizer_name and authorizer_name != "NONE":
                authorizer = owner.authorizers.get(authorizer_name) or UnsupportedAuthorizer(
                    authorizer_name, f"authorizer {authorizer_name} is not defined (or is AWS_IAM)"
                )
            routes.append(
                Route(
                    owner,
                    method if path is not None else "ANY",
                    str(path) if path is not None else None,
                    logical_id,
                    authorizer,
                    tuple(str(scope) for scope in auth.get("AuthorizationScopes") or []),
                    int(properties.get("TimeoutInMillis") or config.API_INTEGRATION_TIMEOUT_MS),
                    str(properties.get("PayloadFormatVersion") or "2.0"),
                )
            )
    return routes


def _json(status: int, message: str) -> tuple[int, bytes]:
    """A gateway's own answer, byte for byte as API Gateway writes it: ``{"message":"Not Found"}``."""
    return status, json.dumps({"message": message}, separators=(",", ":")).encode()


def _request_id() -> str:
    return base64.b64encode(uuid.uuid4().bytes[:12]).decode()


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media in _TEXT_TYPES or media.endswith("+json") or media.endswith("+xml")


class ApiGateway(LocalServer):
    def __init__(self, port: int) -> None:
        super().__init__(port, _Handler)
        self.routes: list[Route] = []
        self.runtime: LambdaRuntime | None = None
        self.keys: list[SigningKey] = []
        self.sink: LogSink | None = None

    def configure(self, routes: list[Route], runtime: LambdaRuntime, keys: list[SigningKey], sink: LogSink) -> None:
        self.routes, self.runtime, self.keys, self.sink = routes, runtime, keys, sink

    def find_route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        best: tuple[tuple[int, ...], Route, dict[str, str]] | None = None
        for route in self.routes:
            relative = path
            if route.api.stage != "$default":
                prefix = f"/{route.api.stage}"
                if path != prefix and not path.startswith(prefix + "/"):
                    continue
                relative = path[len(prefix) :] or "/"
            segments = relative.strip("/").split("/") if relative != "/" else [""]
            if relative.endswith("/") and relative != "/":
                segments.append("")
            matched = route.match(method, segments)
            if matched is not None and (best is None or matched[0] < best[0]):
                best = (matched[0], route, matched[1])
        return (best[1], best[2]) if best else None


class _Handler(RequestHandler):
    server: ApiGateway

    _status = 0

    def do_GET(self) -> None:
        started = time.monotonic()
        try:
            self._handle()
        finally:
            if self.server.sink is not None:  # the path only: a query may carry a code or a flow handle
                path = self.path.partition("?")[0]
                took = (time.monotonic() - started) * 1000
                self.server.sink.activity(f"{self.command} {path} {self._status} {took:.0f} ms")

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def respond(
        self, status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = (), *, head_only: bool = False
    ) -> None:
        self._status = status
        super().respond(status, body, headers, head_only=head_only)

    # ------------------------------------------------------------------ request
    def _handle(self) -> None:
        started = time.time()
        request_id = _request_id()
        base_headers = [("apigw-requestid", request_id)]
        method = self.command.upper()
        raw_path, _, raw_query = self.path.partition("?")
        if raw_path.startswith(("http://", "https://")):  # absolute-form request target
            raw_path = urllib.parse.urlsplit(raw_path).path or "/"
        server = self.server
        try:
            body = self.read_body(config.API_BODY_LIMIT)
        except BodyTooLarge:
            self._reply(*_json(413, "Request Entity Too Large"), base_headers)
            return
        except ValueError:
            self._reply(*_json(400, "Bad Request"), base_headers)
            return
        cors_headers: list[tuple[str, str]] = []
        if method == "OPTIONS" and self._preflight(raw_path, base_headers):
            return
        found = server.find_route(method, raw_path)
        if found is None:
            # API Gateway answers an unknown route (path or method) itself, before any authorizer.
            self._reply(*_json(404, "Not Found"), base_headers)
            return
        route, path_parameters = found
        cors_headers = self._cors_headers(route)
        if server.runtime is None:
            self._reply(*_json(503, "Service Unavailable"), base_headers)
            return
        authorizer_context: dict[str, Any] | None = None
        if route.authorizer is not None:
            outcome = self._authorize(route)
            if isinstance(outcome, tuple):
                status, message, extra = outcome
                if status == 401:
                    # The JWT authorizer's refusal carries no content-type, only the challenge.
                    self.respond(
                        *_json(status, message), base_headers + cors_headers + extra, head_only=method == "HEAD"
                    )
                else:
                    self._reply(*_json(status, message), base_headers + cors_headers + extra)
                return
            authorizer_context = outcome
        event = self._event(route, raw_path, raw_query, body, path_parameters, authorizer_context, request_id, started)
        spec = server.runtime.functions[route.function]
        integration_timeout = route.timeout_ms / 1000
        result = server.runtime.invoke(spec, json.dumps(event).encode(), timeout=integration_timeout)
        if not result.ok:
            error = result.json() or {}
            if error.get("errorType") == "Sandbox.Timedout" and integration_timeout < spec.timeout:
                self._reply(*_json(503, "Service Unavailable"), base_headers + cors_headers)
            else:
                self._reply(*_json(500, "Internal Server Error"), base_headers + cors_headers)
            return
        self._respond_with(result.payload, route, base_headers + cors_headers)

    def _authorize(self, route: Route) -> dict[str, Any] | tuple[int, str, list[tuple[str, str]]]:
        authorizer = route.authorizer
        assert authorizer is not None
        if isinstance(authorizer, UnsupportedAuthorizer):
            self._log(route.function, f"[devstack] route {route.route_key}: {authorizer.reason}")
            return 500, "Internal Server Error", []
        raw = ", ".join(self.headers.get_all(authorizer.identity_header) or [])
        if not raw:
            return 401, "Unauthorized", [("www-authenticate", "Bearer")]
        token = raw[7:].strip() if raw[:7].lower() == "bearer " else raw.strip()
        try:
            claims = verify(token, self.server.keys, issuer=authorizer.issuer, audiences=authorizer.audiences)
        except InvalidToken as error:
            challenge = f'Bearer scope="{" ".join(route.scopes)}" error="invalid_token" error_description="{error}"'
            return 401, "Unauthorized", [("www-authenticate", challenge)]
        scopes = token_scopes(claims)
        if route.scopes and not set(route.scopes) & set(scopes):
            challenge = f'Bearer scope="{" ".join(route.scopes)}" error="insufficient_scope"'
            return 403, "Forbidden", [("www-authenticate", challenge)]
        return {"jwt": {"claims": flatten_claims(claims), "scopes": scopes if route.scopes else None}}

    def _headers(self) -> tuple[dict[str, str], list[str]]:
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in self.headers.items():
            key = name.lower()
            if key in _HOP_BY_HOP:
                continue
            if key == "cookie":
                cookies.extend(part.strip() for part in value.split(";") if part.strip())
                continue
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        client_ip = self.client_address[0]
        forwarded = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{forwarded}, {client_ip}" if forwarded else client_ip
        headers["x-forwarded-proto"] = "http"
        headers["x-forwarded-port"] = str(self.server.port)
        headers.setdefault("host", f"{config.HOST}:{self.server.port}")
        headers["x-amzn-trace-id"] = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"
        return headers, cookies

    def _event(
        self,
        route: Route,
        raw_path: str,
        raw_query: str,
        body: bytes,
        path_parameters: dict[str, str],
        authorizer: dict[str, Any] | None,
        request_id: str,
        started: float,
    ) -> dict[str, Any]:
        headers, cookies = self._headers()
        host = headers["host"].rsplit(":", 1)[0] if not headers["host"].endswith("]") else headers["host"]
        query: dict[str, str] = {}
        for name, value in urllib.parse.parse_qsl(raw_query, keep_blank_values=True):
            query[name] = f"{query[name]},{value}" if name in query else value
        event: dict[str, Any] = {"version": "2.0", "routeKey": route.route_key, "rawPath": raw_path}
        event["rawQueryString"] = raw_query
        if cookies:
            event["cookies"] = cookies
        event["headers"] = headers
        if query:
            event["queryStringParameters"] = query
        context: dict[str, Any] = {"accountId": config.ACCOUNT_ID, "apiId": route.api.api_id}
        if authorizer is not None:
            context["authorizer"] = authorizer
        context.update(
            {
                "domainName": host,
                "domainPrefix": host.split(".", 1)[0],
                "http": {
                    "method": self.command.upper(),
                    "path": raw_path,
                    "protocol": self.request_version,
                    "sourceIp": self.client_address[0],
                    "userAgent": headers.get("user-agent", ""),
                },
                "requestId": request_id,
                "routeKey": route.route_key,
                "stage": route.api.stage,
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(started)),
                "timeEpoch": int(started * 1000),
            }
        )
        event["requestContext"] = context
        if path_parameters:
            event["pathParameters"] = path_parameters
        if body:
            text = _is_text(headers.get("content-type"))
            if text:
                try:
                    event["body"] = body.decode("utf-8")
                except UnicodeDecodeError:
                    text = False
            if not text:
                event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = not text
        else:
            event["isBase64Encoded"] = False
        return event

    # ------------------------------------------------------------------ response
    def _respond_with(self, payload: bytes, route: Route, extra: list[tuple[str, str]]) -> None:
        try:
            output = json.loads(payload)
        except json.JSONDecodeError:
            output = None
        if not isinstance(output, dict) or "statusCode" not in output:
            # API Gateway's inference for a function that returns JSON without a statusCode.
            self._reply(200, payload, [("content-type", "application/json"), *extra])
            return
        try:
            status, headers, body = self._structured(output)
        except (TypeError, ValueError, binascii.Error) as error:
            self._log(route.function, f"[devstack] malformed Lambda proxy response: {error}")
            self._reply(*_json(500, "Internal Server Error"), extra)
            return
        if route.api.cors is not None:  # API Gateway ignores the integration's own CORS headers
            headers = [(name, value) for name, value in headers if not name.lower().startswith("access-control-")]
        self._reply(status, body, headers + extra)

    @staticmethod
    def _structured(output: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        status = output["statusCode"]
        if isinstance(status, bool) or not isinstance(status, int | str):
            raise TypeError("statusCode must be an integer")
        status = int(status)
        if not 100 <= status <= 599:
            raise ValueError(f"statusCode {status} is out of range")
        raw_headers = output.get("headers") or {}
        if not isinstance(raw_headers, dict):
            raise TypeError("headers must be an object")
        headers: list[tuple[str, str]] = []
        for name, value in raw_headers.items():
            if isinstance(value, dict | list):
                raise TypeError(f"header {name} must be a string")
            headers.append((str(name), "true" if value is True else "false" if value is False else str(value)))
        for cookie in output.get("cookies") or []:
            headers.append(("set-cookie", str(cookie)))
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("content-type", "application/json"))
        body = output.get("body")
        if body is None:
            data = b""
        elif not isinstance(body, str):
            raise TypeError("body must be a string")
        elif output.get("isBase64Encoded"):
            data = base64.b64decode(body, validate=True)
        else:
            data = body.encode("utf-8")
        return status, headers, data

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        if body and not any(name.lower() == "content-type" for name, _ in headers):
            headers = [*headers, ("content-type", "application/json")]
        self.respond(status, body, headers, head_only=self.command == "HEAD")

    def _log(self, source: str, line: str) -> None:
        if self.server.sink is not None:
            self.server.sink.write(source, line)

    # ------------------------------------------------------------------ CORS
    def _cors_for(self, path: str) -> Mapping[str, Any] | None:
        """The CORS configuration of the API that serves ``path`` (API Gateway answers preflights itself)."""
        for route in self.server.routes:
            stage = route.api.stage
            if route.api.cors is not None and (stage == "$default" or path.startswith(f"/{stage}")):
                return route.api.cors
        return None

    def _origin_allowed(self, cors: Mapping[str, Any], origin: str) -> bool:
        """API Gateway's matching: an exact origin, "*", or any origin of a scheme ("https://*")."""
        scheme = origin.partition("://")[0].lower()
        for item in cors.get("AllowOrigins") or []:
            allowed = str(item).rstrip("/")
            if allowed == "*" or allowed.lower() == origin.lower() or allowed == f"{scheme}://*":
                return True
        return False

    def _preflight(self, path: str, base_headers: list[tuple[str, str]]) -> bool:
        cors = self._cors_for(path)
        origin = self.headers.get("Origin")
        requested = self.headers.get("Access-Control-Request-Method")
        if cors is None or not origin or not requested:
            return False
        headers = list(base_headers)
        if self._origin_allowed(cors, origin):
            allowed_origins = [str(item) for item in cors.get("AllowOrigins") or []]
            allow_origin = "*" if "*" in allowed_origins and not cors.get("AllowCredentials") else origin
            headers.append(("access-control-allow-origin", allow_origin))
            methods = [str(item).upper() for item in cors.get("AllowMethods") or []]
            if methods:
                headers.append(("access-control-allow-methods", ",".join(methods)))
            allow_headers = [str(item) for item in cors.get("AllowHeaders") or []]
            if allow_headers:
                headers.append(("access-control-allow-headers", ",".join(allow_headers)))
            if cors.get("MaxAge") is not None:
                headers.append(("access-control-max-age", str(cors["MaxAge"])))
            if cors.get("AllowCredentials"):
                headers.append(("access-control-allow-credentials", "true"))
        self.respond(204, b"", headers)
        return True

    def _cors_headers(self, route: Route) -> list[tuple[str, str]]:
        cors = route.api.cors
        origin = self.headers.get("Origin")
        if cors is None or not origin or not self._origin_allowed(cors, origin):
            return []
        allowed_origins = [str(item) for item in cors.get("AllowOrigins") or []]
        allow_origin = "*" if "*" in allowed_origins and not cors.get("AllowCredentials") else origin
        headers = [("access-control-allow-origin", allow_origin)]
        expose = [str(item) for item in cors.get("ExposeHeaders") or []]
        if expose:
            headers.append(("access-control-expose-headers", ",".join(expose)))
        if cors.get("AllowCredentials"):
            headers.append(("access-control-allow-credentials", "true"))
        return headers
