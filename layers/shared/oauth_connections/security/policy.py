"""The SSRF guard's policy for this execution environment, from the settings."""

from __future__ import annotations

from oauth_connections.core.config import get_settings
from oauth_connections.security.netguard import UrlPolicy


def url_policy() -> UrlPolicy:
    """The SSRF guard's policy: loopback over plain http only where the local stack allows it."""
    return UrlPolicy(allow_insecure_loopback=get_settings().allow_insecure_loopback_urls)
