"""The five routes every tenant resource collection has (connections, feeds): list a page, get one, create,
change some settings (under If-Match), delete. One table of routes and one handler per route serve every
collection; a collection names its nouns, its id parameter, its service module and the words of its
OpenAPI entries that are its own.

Each route still has a router of its own (one per function). Its handler is named as the service function
it calls (`get_feed` calls `service.get_feed`), which names its OpenAPI operation, and takes and answers
the models that function takes and returns.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Annotated, Any, NamedTuple, cast, get_type_hints

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body

from oauth_connections.core.caller import Caller
from oauth_connections.core.config import get_settings
from oauth_connections.entrypoints.http.access import MANAGE, READ
from oauth_connections.entrypoints.http.resolver import (
    IfMatch,
    PageCursor,
    PageLimit,
    current_caller,
    documented,
    json_response,
    no_content,
    parse_if_match,
    versioned_response,
)


class _Route(NamedTuple):
    """A route of every collection; {noun}, {plural} and {title} in its texts are the collection's."""

    method: str
    on_item: bool  # /feeds/<feed_id> rather than /feeds
    security: list[dict[str, list[str]]]
    status: int
    answer: str
    errors: tuple[int, ...]
    summary: str | None  # None: the collection gives it


_UPDATE_ERRORS = (400, 401, 404, 409, 412, 413, 415, 422)
_ROUTES = {
    "list": _Route("GET", False, READ, 200, "A page of {plural}", (400, 401, 422), "List the tenant's {title}"),
    "get": _Route("GET", True, READ, 200, "The {noun}", (401, 404, 422), "Get one {noun}"),
    "create": _Route("POST", False, MANAGE, 201, "Created", (400, 401, 413, 415, 422), None),
    "update": _Route("PATCH", True, MANAGE, 200, "Updated", _UPDATE_ERRORS, "Change some settings of a {noun}"),
    "delete": _Route("DELETE", True, MANAGE, 204, "Deleted", (401, 404, 409, 422), None),
}


@dataclass(frozen=True)
class ApiCollection:
    """A collection as its routes name it: `noun` and `plural` name the paths (/feeds, /feeds/<feed_id>)
    and the service functions (list_feeds, get_feed, ...); `item_id` is the id parameter's annotated
    type; `title` is what the list lists."""

    noun: str
    plural: str
    item_id: Any
    service: ModuleType
    title: str


class CollectionRouters(NamedTuple):
    list: Router
    get: Router
    create: Router
    update: Router
    delete: Router


def collection_routers(
    collection: ApiCollection,
    *,
    create: str,
    delete: str,
    update_description: str | None = None,
    create_errors: tuple[int, ...] = (),
    list_filters: Mapping[str, Any] | None = None,
) -> CollectionRouters:
    """The collection's routes. `create` and `delete` are those routes' summaries; `create_errors` are
    statuses its create answers beyond every create's; `list_filters` are its list's own query parameters,
    each passed on to the service by name (None when absent)."""
    noun, plural, item_name = collection.noun, collection.plural, f"{collection.noun}_id"
    calls = {verb: getattr(collection.service, f"{verb}_{plural if verb == 'list' else noun}") for verb in _ROUTES}
    hints = {verb: get_type_hints(call) for verb, call in calls.items()}
    item = _named(item_name, collection.item_id)
    create_body, update_body = (_named("request", _body(hints[verb]["request"])) for verb in ("create", "update"))
    parameters = {
        "list": [_named("limit", PageLimit, 20), _named("cursor", PageCursor, None), *_filters(list_filters)],
        "get": [item],
        "create": [create_body],
        "update": [item, update_body, _named("if_match", IfMatch, None)],
        "delete": [item],
    }

    def answer(verb: str, caller: Caller, given: dict[str, Any]) -> Response[Any]:
        settings, call = get_settings(), calls[verb]
        match verb:
            case "list":
                return json_response(200, call(settings, caller, given.pop("limit"), given.pop("cursor"), **given))
            case "create":
                return versioned_response(201, call(settings, caller, given["request"]))
            case "update":
                if_match = parse_if_match(given["if_match"])
                return versioned_response(200, call(settings, caller, given[item_name], given["request"], if_match))
            case "delete":
                call(settings, caller, given[item_name])
                return no_content()
        return versioned_response(200, call(settings, caller, given[item_name]))

    words = {"noun": noun, "plural": plural, "title": collection.title}
    summaries = {"create": create, "delete": delete}
    routers = {}
    for verb, route in _ROUTES.items():
        returns = hints[verb]["return"]
        model = None if returns is type(None) else returns
        errors = (*route.errors, *create_errors) if verb == "create" else route.errors
        routers[verb] = _router(
            route.method,
            f"/{plural}/<{item_name}>" if route.on_item else f"/{plural}",
            calls[verb].__name__,
            parameters[verb],
            returns,
            partial(answer, verb),
            summary=route.summary.format(**words) if route.summary else summaries[verb],
            description=update_description if verb == "update" else None,
            **documented(route.security, route.status, route.answer.format(**words), model, *sorted(errors)),
        )
    return CollectionRouters(**routers)


def _named(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _body(model: Any) -> Any:
    return Annotated[model, Body()]


def _filters(filters: Mapping[str, Any] | None) -> list[inspect.Parameter]:
    return [_named(name, annotation, None) for name, annotation in (filters or {}).items()]


def _router(
    method: str,
    path: str,
    name: str,
    parameters: list[inspect.Parameter],
    returns: Any,  # what the service function returns: the handler answers Response[returns]
    answer: Callable[[Caller, dict[str, Any]], Response[Any]],
    **declaration: Any,
) -> Router:
    """A router with one route. The resolver validates and documents the handler's arguments by the
    signature given here; the handler answers for the caller the authorizer names."""
    router = Router()
    response = cast(Any, Response)[returns]

    def handler(**given: Any) -> Response[Any]:
        return answer(current_caller(router), given)

    handler.__name__ = handler.__qualname__ = name
    handler.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters} | {"return": response}
    setattr(handler, "__signature__", inspect.Signature(parameters, return_annotation=response))  # noqa: B010
    router.route(path, method, **declaration)(handler)
    return router
