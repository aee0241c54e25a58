"""The HTTP API's CORS configuration in template.yaml: what a browser page on the frontend needs, no more."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.template import Resolver, load_template, parameter_values
from tests.conftest import REPO


def cors_for(**parameters: str) -> dict[str, Any]:
    template = load_template(REPO / "template.yaml")
    values = parameter_values(
        template, parameters, {"api_url": "https://api.example.com", "aws_url": "", "lambda_url": ""}
    )

    def unavailable(logical_id: str, attribute: str | None) -> Any:
        raise AssertionError(f"the CORS configuration must not depend on {logical_id}")

    resolver = Resolver(parameters=values, attribute=unavailable, conditions=template["Conditions"])
    cors: dict[str, Any] = resolver.resolve(template["Resources"]["HttpApi"]["Properties"]["CorsConfiguration"])
    return cors


def test_the_api_allows_what_the_frontend_sends_and_exposes_the_etag() -> None:
    cors = cors_for(AllowedReturnOrigins="https://app.example.com", AllowedOrigins="")
    assert cors == {
        "AllowOrigins": ["https://app.example.com"],  # no AllowedOrigins: the return origins
        "AllowMethods": ["GET", "POST", "PATCH", "DELETE"],
        "AllowHeaders": ["Authorization", "Content-Type", "If-Match"],
        "ExposeHeaders": ["ETag"],
        "MaxAge": 600,
    }
    assert "AllowCredentials" not in cors  # bearer tokens, never cookies, cross-origin


@pytest.mark.parametrize("origins", ["https://console.example.com", "https://a.example.com,https://b.example.com"])
def test_allowed_origins_replace_the_return_origins(origins: str) -> None:
    cors = cors_for(AllowedReturnOrigins="https://app.example.com", AllowedOrigins=origins)
    assert cors["AllowOrigins"] == origins.split(",")
