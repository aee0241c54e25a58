"""What a token needs to know about the local stack (issuer, audience, tenant claim, scopes), cheaply.

From the ``stack.json`` of a stack running from the state dir, else from the template and the
same port settings ``run`` would use. Imports no AWS libraries (``make dev-token`` stays fast).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import config
from devstack.template import load_template, parameter_values, route_scopes

STACK_FILE = "stack.json"


@dataclass(frozen=True)
class TokenSettings:
    issuer: str
    audience: list[str]
    tenant_claim: str
    scopes: list[str]  # every scope some route requires


def running_stack_info(state_dir: Path) -> dict[str, Any] | None:
    """The stack.json of a stack that is running now from ``state_dir``, if any."""
    try:
        info: dict[str, Any] = json.loads((state_dir / STACK_FILE).read_text(encoding="utf-8"))
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


def token_settings(state_dir: Path, template_path: Path) -> TokenSettings:
    info = running_stack_info(state_dir)
    if info is not None:
        return TokenSettings(
            str(info["issuer"]), list(info["audience"]), str(info["tenant_claim"]), list(info["scopes"])
        )
    fields = {
        "api_url": config.api_url_for(config.env_port("API_PORT", config.DEFAULT_API_PORT)),
        "lambda_url": config.api_url_for(config.env_port("LAMBDA_PORT", config.DEFAULT_LAMBDA_PORT)),
        "aws_url": config.api_url_for(config.env_port("AWS_PORT", config.DEFAULT_AWS_PORT)),
    }
    template = load_template(template_path)
    parameters = parameter_values(template, {}, fields)
    audience = parameters.get("JwtAudience", [])
    return TokenSettings(
        str(parameters.get("JwtIssuer", "")),
        list(audience) if isinstance(audience, list) else [str(audience)],
        str(parameters.get("TenantClaim", "tenant_id")),
        route_scopes(template, parameters),
    )
