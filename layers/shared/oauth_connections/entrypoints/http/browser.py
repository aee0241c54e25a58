"""The browser's side of the authorization flow: /oauth2/authorize and /oauth2/callback."""

from __future__ import annotations

import html
from typing import Any, cast

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.shared.cookies import Cookie, SameSite
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from oauth_connections.connections import flows
from oauth_connections.core.config import Settings, get_settings
from oauth_connections.entrypoints.http import popup

authorize_redirect_router = Router()


_BROWSER_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _redirect(location: str, cookies: list[Cookie] | None = None) -> Response[Any]:
    return Response(status_code=302, headers={"Location": location, **_BROWSER_HEADERS}, cookies=cookies or [])


def _popup(message: dict[str, Any], location: str, cookies: list[Cookie]) -> Response[Any]:
    page, headers = popup.popup_page(message, location)
    return Response(
        status_code=200,
        content_type="text/html; charset=utf-8",
        body=page,
        headers={**_BROWSER_HEADERS, **headers},
        cookies=cookies,
    )


def _error_page(error: flows.FlowError) -> Response[Any]:
    if error.return_url:
        location = flows.with_query(error.return_url, status="error", error=error.code, error_description=error.message)
        if error.display == "popup":
            message = popup.popup_message("error", error.connection_id, error.code, error.message)
            return _popup(message, location, [])
        return _redirect(location)
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Connection failed</title>"
        "<body style='font-family:sans-serif;max-width:40em;margin:4em auto'>"
        f"<h1>Connection failed</h1><p>{html.escape(error.message)}</p>"
        f"<p><small>Error code: {html.escape(error.code)}</small></p>"
        "<p>Close this window and start again from the app.</p></body></html>"
    )
    return Response(
        status_code=400,
        content_type="text/html; charset=utf-8",
        body=page,
        headers={**_BROWSER_HEADERS, "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
    )


@authorize_redirect_router.get("/oauth2/authorize", include_in_schema=False)
def authorize_redirect() -> Response[Any]:
    settings = get_settings()
    params = authorize_redirect_router.current_event.query_string_parameters or {}
    try:
        target = flows.begin_redirect(settings, params.get("flow"))
    except flows.FlowError as error:
        return _error_page(error)
    cookie = Cookie(
        name=target.cookie_name,
        value=target.cookie_value,
        path="/",
        secure=settings.cookie_secure,
        http_only=True,
        same_site=SameSite.LAX_MODE,
        max_age=target.max_age,
    )
    return _redirect(target.location, [cookie])


oauth_callback_router = Router()


def _cookies(raw: list[str] | None) -> dict[str, str]:
    jar: dict[str, str] = {}
    for entry in raw or []:
        for part in entry.split(";"):
            name, _, value = part.strip().partition("=")
            if name and name not in jar:
                jar[name] = value
    return jar


@oauth_callback_router.get("/oauth2/callback", include_in_schema=False)
def oauth_callback() -> Response[Any]:
    event = cast(APIGatewayProxyEventV2, oauth_callback_router.current_event)
    settings = get_settings()
    params = dict(event.query_string_parameters or {})
    try:
        done = flows.complete_callback(settings, params, _cookies(event.cookies))
    except flows.FlowError as error:
        return _error_page(error)
    spent = _spent_cookie(settings, params)
    if done.display == "popup":
        return _popup(popup.popup_message("connected", done.connection_id), done.return_url, spent)
    return _redirect(done.return_url, spent)


def _spent_cookie(settings: Settings, params: dict[str, str]) -> list[Cookie]:
    """The flow's binding cookie has done its job: expire it."""
    return [
        Cookie(
            name=flows.cookie_name(settings, params.get("state", "")),
            value="",
            path="/",
            secure=settings.cookie_secure,
            http_only=True,
            same_site=SameSite.LAX_MODE,
            max_age=0,
        )
    ]
