"""The HTTP plumbing every API function shares: resolver, errors, caller identity, limits."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Annotated, Any, cast

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import BaseRouter, Router
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFoundError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Header, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from oauth_connections.core import aws, budget
from oauth_connections.core.caller import CALLBACK_PATH, Caller
from oauth_connections.core.config import get_settings
from oauth_connections.core.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    ServiceError,
    ServiceUnavailableError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from oauth_connections.core.ids import TENANT_PATTERN
from oauth_connections.core.observability import logger, tracer
from oauth_connections.entrypoints.http.access import FORBIDDEN

type Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def error_response(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> Response[Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"error": error}),
        headers={"Cache-Control": "no-store"},
    )


def documented_responses(
    status: int, description: str, model: type[BaseModel] | None, *errors: int
) -> dict[int, OpenAPIResponse]:
    """OpenAPI entries for a route: its success response and its errors, all in the one error shape."""
    success: OpenAPIResponse = {"description": description}
    if model is not None:
        success["content"] = {"application/json": {"model": model}}
    documented: dict[int, OpenAPIResponse] = {status: success}
    for error in errors:
        documented[error] = {
            "description": HTTPStatus(error).phrase,
            "content": {"application/json": {"model": ErrorBody}},
        }
    return documented


def documented(
    security: list[dict[str, list[str]]], status: int, description: str, model: type[BaseModel] | None, *errors: int
) -> dict[str, Any]:
    """A route's OpenAPI entries and the scopes it needs: a route without them is refused with 403."""
    return {"responses": documented_responses(status, description, model, *errors) | FORBIDDEN, "security": security}


def _validation_details(error: RequestValidationError) -> tuple[int, str, list[dict[str, Any]]]:
    """Map pydantic's errors without echoing input values: a rejected value may be a secret."""
    details = []
    status, code = 422, "validation_error"
    for item in error.errors():
        kind = str(item.get("type", ""))
        if kind == "json_invalid":
            return 400, "malformed_json", []
        location = [str(part) for part in item.get("loc", ())]
        field = ".".join(location[1:]) or (location[0] if location else "")
        details.append({"field": field, "issue": kind, "message": _message_of(item)})
    return status, code, details


def _message_of(item: dict[str, Any]) -> str:
    return str(item.get("msg", "invalid value")).removeprefix("Value error, ")


def build_resolver(routers: Iterable[Router]) -> APIGatewayHttpResolver:
    app = APIGatewayHttpResolver(enable_validation=True)
    for router in routers:
        app.include_router(router)

    @app.exception_handler(ServiceError)
    def _service_error(error: ServiceError) -> Response[Any]:
        if error.status >= 500:
            logger.exception("request failed", extra={"error_code": error.code})
        else:
            logger.info("request refused", extra={"status": error.status, "error_code": error.code})
        response = error_response(error.status, error.code, error.message)
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        return response

    app.use(middlewares=[_aws_unavailable_as_error])

    @app.exception_handler(ServiceUnavailableError)
    def _service_unavailable(error: ServiceUnavailableError) -> Response[Any]:
        logger.warning("request failed: AWS unavailable", extra={"error_code": error.code}, exc_info=error)
        response = error_response(error.status, error.code, error.message)
        response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    def _invalid_request(error: RequestValidationError) -> Response[Any]:
        status, code, details = _validation_details(error)
        message = "request body is not valid JSON" if code == "malformed_json" else "request is invalid"
        logger.info("request refused", extra={"status": status, "error_code": code, "fields": details})
        return error_response(status, code, message, details)

    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported_media_type(_: RequestUnsupportedContentType) -> Response[Any]:
        return _unsupported_media_type_response()

    @app.not_found
    def _no_route(_: RouteNotFoundError) -> Response[Any]:
        return error_response(404, "not_found", "no such route")

    return app


def _aws_unavailable_as_error(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """A throttled or unreachable AWS dependency, in whatever SDK error, answers 503 service_unavailable."""
    try:
        return next_middleware(app)
    except Exception as error:
        unavailable = aws.unavailable_error(error)
        if unavailable is None or unavailable is error:
            raise
        raise unavailable from error


def current_caller(app: BaseRouter) -> Caller:
    """The tenant and the user come from the authorizer's verified claims only, never from the request."""
    settings = get_settings()
    event = cast(APIGatewayProxyEventV2, app.current_event)
    authorizer = event.request_context.authorizer
    claims = authorizer.jwt_claim if authorizer else None
    tenant = (claims or {}).get(settings.tenant_claim)
    if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
        raise UnauthorizedError("the bearer token names no valid tenant", code="invalid_tenant_claim")
    base = settings.public_base_url or f"https://{event.request_context.domain_name}"
    return Caller(
        tenant_id=tenant, callback_url=base + CALLBACK_PATH, user_id=_user_of(claims or {}, settings.user_claim)
    )


USER_ID_MAX_LENGTH = 256


def _user_of(claims: dict[str, Any], claim: str) -> str | None:
    """The user the verified claims name; a missing, non-text or oversized value names no one."""
    user = claims.get(claim)
    if isinstance(user, str) and 0 < len(user) <= USER_ID_MAX_LENGTH and user.isprintable():
        return user
    return None


def http_handler(*routers: Router) -> Handler:
    """The Lambda handler of an API function serving the given routes."""
    app = build_resolver(routers)

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
    @tracer.capture_lambda_handler(capture_response=False)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        try:
            with budget.invocation(context):
                return _handle(app, event, context)
        except Exception:  # noqa: BLE001 - the one place an unexpected error becomes an answer
            return internal_error_response(context)

    return cast(Handler, handler)


def _handle(app: APIGatewayHttpResolver, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    body = event.get("body") or ""
    limit = get_settings().max_body_bytes
    encoded_limit = limit * 4 // 3 + 4 if event.get("isBase64Encoded") else limit
    if len(body) > encoded_limit:
        error: ServiceError = PayloadTooLargeError(f"request body is larger than {limit} bytes")
        return _as_proxy_response(error_response(error.status, error.code, error.message))
    content_type = _header(event, "content-type")
    if _is_json_media_type(content_type):
        event["headers"]["content-type"] = content_types.APPLICATION_JSON  # the resolver compares it verbatim
    elif body:
        return _as_proxy_response(_unsupported_media_type_response())
    return app.resolve(event, context)


def internal_error_response(context: LambdaContext) -> dict[str, Any]:
    """Log the exception being handled, with its trace, and answer 500 in the error shape (never the
    gateway's bare 500); the correlation id (the API request id) leads from the answer to the log line."""
    correlation_id = logger.get_correlation_id() or context.aws_request_id
    logger.exception("request failed unexpectedly", extra={"error_code": "internal_error"})
    error = {
        "code": "internal_error",
        "message": "the service failed to answer this request; quote the correlation_id when reporting it",
        "correlation_id": correlation_id,
    }
    return _as_proxy_response(
        Response(status_code=500, content_type=content_types.APPLICATION_JSON, body=json.dumps({"error": error}))
    )


def _unsupported_media_type_response() -> Response[Any]:
    error = UnsupportedMediaTypeError("request bodies must be JSON, sent with Content-Type: application/json")
    return error_response(error.status, error.code, error.message)


def _is_json_media_type(content_type: str | None) -> bool:
    """Every body is JSON: a body under another (or no) media type is refused, not guessed at, so that a
    client that forgot the header learns it at once instead of seeing its JSON read as form fields."""
    return (content_type or "").split(";", 1)[0].strip().lower() == content_types.APPLICATION_JSON


def _header(event: dict[str, Any], name: str) -> str | None:
    headers = event.get("headers") or {}
    return next((str(value) for key, value in headers.items() if key.lower() == name), None)


def _as_proxy_response(response: Response[Any]) -> dict[str, Any]:
    return {
        "statusCode": response.status_code,
        "headers": {"Content-Type": content_types.APPLICATION_JSON, "Cache-Control": "no-store"},
        "body": response.body,
        "isBase64Encoded": False,
    }


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, object]] | None = None
    correlation_id: str | None = Field(default=None, description="On an internal error: the request's id in the logs")


class ErrorBody(BaseModel):
    error: ErrorDetail


AUTH_ERRORS = (401,)


def json_response(status: int, model: Any, *, etag: int | None = None) -> Response[Any]:
    headers = {"Cache-Control": "no-store"}
    if etag is not None:
        headers["ETag"] = f'"{etag}"'
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=model,
        headers=headers,
    )


def versioned_response(status: int, view: Any) -> Response[Any]:
    """A resource's JSON with its version as the ETag, the value If-Match sends back."""
    return json_response(status, view, etag=view.version)


def no_content() -> Response[None]:
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


PageLimit = Annotated[int, Query(ge=1, le=100, description="Page size")]
PageCursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")]
IfMatch = Annotated[str | None, Header(alias="if-match", max_length=64)]


def parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    # isdigit alone admits non-ASCII digits ("²") that int() refuses.
    if not (tag.isascii() and tag.isdigit()) or len(tag) > 18:
        raise InvalidRequestError("If-Match must be an ETag returned by this API", code="invalid_if_match")
    return int(tag)
