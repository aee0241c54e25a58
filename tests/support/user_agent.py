"""A scripted user agent that walks an OAuth 2.0 authorization flow like a browser would.

It follows redirects by hand, signs in on the authorization server's own login page, answers
its consent page, and stops at the first redirect that leaves the authorization server's origin:
that is the redirect back to the client (the callback). The callback is not requested unless
asked for. Nothing here knows the client application.

The authorization server's origin is the origin of the first URL in the chain that is an
authorization request (it carries ``client_id`` and ``response_type`` or ``request_uri``), unless
``provider_origin`` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

_TIMEOUT = 10.0
_DENY_WORDS = ("cancel", "deny", "abort", "reject", "decline")


class AuthorizationFlowError(AssertionError):
    """The flow went somewhere a browser user could not have gone on."""


@dataclass
class AuthorizationResult:
    """Where the walk stopped.

    ``url`` is the callback URL (or the URL ``stop_at`` matched); ``params`` holds its query
    parameters (or, for ``response_mode=form_post``, the posted fields), one value per name.
    """

    url: str
    params: dict[str, str]
    session: requests.Session
    method: Literal["GET", "POST"] = "GET"
    stopped_by_predicate: bool = False
    visited: list[str] = field(default_factory=list)
    response: requests.Response | None = None

    @property
    def callback_url(self) -> str:
        return self.url

    @property
    def query(self) -> dict[str, str]:
        return self.params

    @property
    def code(self) -> str | None:
        return self.params.get("code")

    @property
    def state(self) -> str | None:
        return self.params.get("state")

    @property
    def error(self) -> str | None:
        return self.params.get("error")

    @property
    def iss(self) -> str | None:
        return self.params.get("iss")

    def follow(self, *, allow_redirects: bool = False) -> requests.Response:
        """Request the callback in the same session (cookies included), as the browser would."""
        if self.method == "POST":
            response = self.session.post(self.url, data=self.params, allow_redirects=allow_redirects, timeout=_TIMEOUT)
        else:
            response = self.session.get(self.url, allow_redirects=allow_redirects, timeout=_TIMEOUT)
        self.response = response
        return response


@dataclass
class _Form:
    action: str
    method: str
    inputs: list[dict[str, str]] = field(default_factory=list)
    buttons: list[dict[str, str]] = field(default_factory=list)

    def has_password(self) -> bool:
        return any(i.get("type", "text").lower() == "password" for i in self.inputs)


@dataclass
class _Link:
    href: str
    text: str = ""


class _PageParser(HTMLParser):
    """Collects forms (action, method, inputs, submit buttons) and links of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.links: list[_Link] = []
        self._form: _Form | None = None
        self._link: _Link | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v or "" for k, v in attrs}
        if tag == "form":
            self._form = _Form(action=a.get("action", ""), method=(a.get("method") or "get").lower())
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            self._form.inputs.append(a)
        elif tag == "button" and self._form is not None:
            self._form.buttons.append(a)
        elif tag == "a" and "href" in a:
            self._link = _Link(href=a["href"])
            self.links.append(self._link)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "a":
            self._link = None

    def handle_data(self, data: str) -> None:
        if self._link is not None:
            self._link.text += data
        self._text.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self._text).split())


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _single_values(query: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}


def _is_authorization_request(url: str) -> bool:
    query = _single_values(urlsplit(url).query)
    return "client_id" in query and ("response_type" in query or "request_uri" in query)


def _form_fields(form: _Form, *, username: str, password: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    text_inputs: list[str] = []
    for item in form.inputs:
        name = item.get("name")
        kind = item.get("type", "text").lower()
        if not name or kind in {"submit", "button", "image", "reset", "file"}:
            continue
        if kind in {"checkbox", "radio"}:
            if "checked" in item:
                fields[name] = item.get("value", "on")
            continue
        if kind == "password":
            fields[name] = password
            continue
        fields[name] = item.get("value", "")
        if kind in {"text", "email"}:
            text_inputs.append(name)
    if form.has_password() and text_inputs:
        preferred = [n for n in text_inputs if n.lower() in {"login", "username", "user", "email"}]
        fields[(preferred or text_inputs)[0]] = username
    return fields


def _deny_link(page: _PageParser, base: str) -> str | None:
    for link in page.links:
        text = link.text.strip().lower()
        href = link.href.lower()
        if any(word in text for word in _DENY_WORDS) or href.rstrip("/").endswith("/abort"):
            return urljoin(base, link.href)
    return None


def walk_authorization(
    start_url: str,
    *,
    username: str = "alice",
    password: str = "test",
    approve: bool = True,
    session: requests.Session | None = None,
    stop_at: Callable[[str], bool] | None = None,
    provider_origin: str | None = None,
    follow_callback: bool = False,
    max_steps: int = 30,
) -> AuthorizationResult:
    """Walk from ``start_url`` to the redirect back to the client.

    ``start_url`` may be a client URL that redirects to the authorization endpoint, or the
    authorization request URL itself. ``approve=False`` cancels at the consent page (the
    authorization server then answers ``error=access_denied``). ``stop_at`` is asked about every
    URL before it is requested; when it answers True the walk stops there. With
    ``follow_callback=True`` the callback is requested too (redirects not followed) and its
    response is in ``result.response``.
    """
    http = session if session is not None else requests.Session()
    origin = _origin(provider_origin) if provider_origin else None
    visited: list[str] = []
    method: Literal["GET", "POST"] = "GET"
    data: dict[str, str] | None = None
    url = start_url
    if origin is None and _is_authorization_request(url):
        origin = _origin(url)

    def finish(
        target: str, params: dict[str, str], *, how: Literal["GET", "POST"] = "GET", matched: bool = False
    ) -> AuthorizationResult:
        result = AuthorizationResult(
            url=target,
            params=params,
            session=http,
            method=how,
            stopped_by_predicate=matched,
            visited=visited,
        )
        if follow_callback and not matched:
            result.follow()
        return result

    for _ in range(max_steps):
        if stop_at is not None and visited and stop_at(url):
            return finish(url, _single_values(urlsplit(url).query), matched=True)
        visited.append(url)
        response = http.request(method, url, data=data, allow_redirects=False, timeout=_TIMEOUT)
        method, data = "GET", None

        if response.is_redirect:
            target = urljoin(url, response.headers["location"])
            if origin is None:
                if _is_authorization_request(target):
                    origin = _origin(target)
            elif _origin(url) == origin and _origin(target) != origin:
                return finish(target, _single_values(urlsplit(target).query))
            url = target
            continue

        if origin is None:
            raise AuthorizationFlowError(
                f"{url} answered {response.status_code} before any authorization request was seen"
            )
        page = _PageParser()
        if "html" in response.headers.get("content-type", ""):
            page.feed(response.text)
            page.close()
        if response.status_code != 200:
            raise AuthorizationFlowError(f"{url} answered {response.status_code}: {page.text or response.text}")
        if not page.forms:
            raise AuthorizationFlowError(f"{url} shows no form: {page.text[:500]}")

        # response_mode=form_post: an auto-submitting form that posts the answer to the client.
        for form in page.forms:
            action = urljoin(url, form.action)
            if _origin(action) != origin:
                fields = {i["name"]: i.get("value", "") for i in form.inputs if i.get("name")}
                return finish(action, fields, how="POST" if form.method == "post" else "GET")

        login_forms = [f for f in page.forms if f.has_password()]
        if login_forms:
            form = login_forms[0]
        else:
            if not approve:
                deny = _deny_link(page, url)
                if deny is None:
                    raise AuthorizationFlowError(f"{url}: no way to deny the authorization: {page.text[:500]}")
                url = deny
                continue
            form = page.forms[0]

        url = urljoin(url, form.action) if form.action else url
        fields = _form_fields(form, username=username, password=password)
        if form.method == "post":
            method, data = "POST", fields
        else:
            url = requests.Request("GET", url, params=fields).prepare().url or url

    raise AuthorizationFlowError(f"no callback after {max_steps} steps; visited: {visited}")
