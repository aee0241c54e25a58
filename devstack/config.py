"""Constants of the local stack, and the ONE place for local-only environment and parameter values."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

STACK_NAME: Final = "oauth-connections-local"
REGION: Final = "eu-central-1"
# moto's default account; every ARN the local stack produces uses it.
ACCOUNT_ID: Final = "123456789012"
PARTITION: Final = "aws"
URL_SUFFIX: Final = "amazonaws.com"

HOST: Final = "127.0.0.1"
DEFAULT_API_PORT: Final = 3000
DEFAULT_LAMBDA_PORT: Final = 3001
DEFAULT_PROVIDER_PORT: Final = 3002
DEFAULT_AWS_PORT: Final = 4566
DEFAULT_RETURN_PORT: Final = 3003
DEFAULT_CONSOLE_PORT: Final = 8000

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE: Final = REPO_ROOT / "template.yaml"
STATE_DIR_NAME: Final = ".devstack"
#: Where `make setup` installs the Node.js the demo provider needs (an LTS release oidc-provider supports).
NODE_DIR: Final = REPO_ROOT / ".tools" / "node"

#: Fake credentials of the embedded AWS (moto accepts anything). Functions sign with keys that name them
#: (``iam.access_key_for``), which the embedded AWS holds to their template policies; these stay unrestricted.
FAKE_ACCESS_KEY: Final = "testing"
FAKE_SECRET_KEY: Final = "testing"  # noqa: S105 (moto accepts any credentials)

#: Environment variables every local function gets ON TOP of its template environment
#: (Globals merged with the function's own). Values are ``str.format`` templates over:
#: ``aws_url``, ``api_url``, ``lambda_url``, ``console_url``, ``function_name``, ``memory_size``,
#: ``access_key_id``.
#: Callers add more with ``Stack(env_overrides=...)``; nothing else in devstack sets function env vars
#: except the reserved runtime variables Lambda itself provides (see ``runtime.reserved_environment``).
LOCAL_ENV_OVERRIDES: Final[dict[str, str]] = {
    "AWS_ENDPOINT_URL": "{aws_url}",
    # Lambda clients inside functions talk to the local Lambda endpoint, not to the embedded AWS.
    "AWS_ENDPOINT_URL_LAMBDA": "{lambda_url}",
    "AWS_ACCESS_KEY_ID": "{access_key_id}",
    "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_KEY,
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_LAMBDA_FUNCTION_NAME": "{function_name}",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "{memory_size}",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "ALLOW_INSECURE_LOOPBACK_URLS": "true",
    "PUBLIC_BASE_URL": "{api_url}",
    "LAMBDA_ENDPOINT_URL": "{lambda_url}",
}

#: Local values of template Parameters (used only for parameters the template declares; a
#: parameter without a local value here uses its template Default). Same ``str.format`` fields.
LOCAL_PARAMETER_VALUES: Final[dict[str, str]] = {
    "JwtIssuer": "{api_url}/local-issuer",
    "JwtAudience": "oauth-connections-local",
    "PublicBaseUrl": "",
    "AllowedReturnOrigins": "http://127.0.0.1:*,http://localhost:*",
    # CORS matches exact origins: the console's.
    "AllowedOrigins": "{console_url}",
    # The demo provider's tokens live five minutes: sweep every minute so `make run` shows refreshes.
    "RefreshScheduleExpression": "rate(1 minute)",
    # The embedded AWS on a busy laptop answers far slower than AWS does.
    "AwsTimeoutSeconds": "15",
}

#: Environment switches of ``python -m devstack run`` (the Stack options win in tests).
ENV_SCHEDULES: Final = "DEVSTACK_SCHEDULES"  # "0"/"false"/"off" disables schedules
ENV_SCHEDULE_SPEEDUP: Final = "DEVSTACK_SCHEDULE_SPEEDUP"  # e.g. "60": rate(1 minute) fires every second
ENV_STATE_DIR: Final = "DEVSTACK_STATE_DIR"
ENV_ALL_LOGS: Final = "DEVSTACK_ALL_LOGS"  # "1": the console streams every log line
ENV_IAM: Final = "DEVSTACK_IAM"  # "0"/"false"/"off": functions may do anything on the embedded AWS

#: Lambda-like limits.
MAX_WORKERS_PER_FUNCTION: Final = 64
INIT_TIMEOUT_SECONDS: Final = 30.0  # Lambda allows 10 s; cold starts on a busy laptop need more
SYNC_PAYLOAD_LIMIT: Final = 6 * 1024 * 1024
ASYNC_PAYLOAD_LIMIT: Final = 256 * 1024
API_BODY_LIMIT: Final = 10 * 1024 * 1024
API_INTEGRATION_TIMEOUT_MS: Final = 30_000


def env_port(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        port = int(value)
    except ValueError:
        raise SystemExit(f"{name} must be a port number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise SystemExit(f"{name} must be a port number, got {value!r}")
    return port


def default_state_dir(repo_root: Path = REPO_ROOT, api_port: int | None = None) -> Path:
    """``.devstack/`` for a stack on the default API port; ``.devstack/api-<port>/`` for one with a moved
    API port, so that two stacks of one checkout never share logs, keys or provider configuration
    (two running stacks cannot share an API port). ``$DEVSTACK_STATE_DIR`` wins."""
    override = os.environ.get(ENV_STATE_DIR, "").strip()
    if override:
        return Path(override).resolve()
    if api_port is None:
        api_port = env_port("API_PORT", DEFAULT_API_PORT)
    base = repo_root / STATE_DIR_NAME
    return base if api_port == DEFAULT_API_PORT else base / f"api-{api_port}"


def api_url_for(port: int) -> str:
    return f"http://{HOST}:{port}"


def node_executable() -> str | None:
    """The Node.js of `make setup` (``.tools/node``) if it is there, else the one on PATH."""
    local = NODE_DIR / "node_modules" / ".bin" / "node"
    return str(local) if local.exists() else shutil.which("node")
