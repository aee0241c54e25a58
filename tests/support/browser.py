"""Headless Chromium (the system's Debian build) driven by Playwright's sync API."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"

CHROMIUM_ARGS: tuple[str, ...] = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Only loopback names resolve: pages that pull in outside resources (the authorization
# server's pages import a web font) then fail those at once instead of waiting on the network.
LOOPBACK_ONLY_ARG = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"

# A consent's submit lands on our callback, which may start a cold function on a loaded machine.
_TIMEOUT_MS = 20_000


def chromium_executable() -> str:
    """The Chromium binary to drive (never one that Playwright would download)."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("no system Chromium found (install the Debian package `chromium`)")
    return found


@contextmanager
def launch_chromium(
    *,
    headless: bool = True,
    loopback_only: bool = True,
    extra_args: Sequence[str] = (),
) -> Iterator[Browser]:
    """A headless Chromium for the duration of the block; each ``browser.new_context()`` is fresh."""
    args = [*CHROMIUM_ARGS, *([LOOPBACK_ONLY_ARG] if loopback_only else []), *extra_args]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), headless=headless, args=args)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def persistent_chromium(
    *,
    headless: bool = True,
    loopback_only: bool = True,
    extra_args: Sequence[str] = (),
) -> Iterator[BrowserContext]:
    """Chromium with its own fresh temporary user-data directory, removed afterwards."""
    args = [*CHROMIUM_ARGS, *([LOOPBACK_ONLY_ARG] if loopback_only else []), *extra_args]
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium_executable(), headless=headless, args=args
        )
        try:
            yield context
        finally:
            context.close()


def login_and_consent(
    page: Page,
    username: str = "alice",
    password: str = "test",
    *,
    approve: bool = True,
    timeout_ms: int = _TIMEOUT_MS,
) -> None:
    """Sign in on the authorization server's login page and answer its consent page.

    ``page`` is on (or navigating to) the login page. Returns once the consent form was
    submitted (or cancelled); the browser then navigates back to the client.
    """
    login_form = page.locator("form:has(input[type=password])")
    login_form.wait_for(state="visible", timeout=timeout_ms)
    login_form.locator("input[name=login], input[name=username], input[type=email]").first.fill(username)
    login_form.locator("input[type=password]").fill(password)
    with page.expect_navigation(timeout=timeout_ms):
        login_form.locator("[type=submit]").first.click()

    consent_form = page.locator("form:has(input[name=prompt][value=consent])")
    if consent_form.count() == 0:
        return  # consent was given before: the server already redirected back to the client
    with page.expect_navigation(timeout=timeout_ms):
        if approve:
            consent_form.locator("[type=submit]").first.click()
        else:
            page.get_by_role("link", name="Cancel").click()
