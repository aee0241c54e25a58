"""Local stack of the service: everything ``template.yaml`` declares, on one machine, in one command.

``python -m devstack run`` (``make run``) starts:

* the embedded AWS: moto in server mode (``AWS_PORT``, default 4566), provisioned from the
  template's own resources (DynamoDB tables, KMS keys and aliases, SQS queues, S3 buckets,
  EventBridge buses) plus a capture queue that receives every EventBridge event;
* a local Lambda runtime: each function runs in worker subprocesses that behave like execution
  environments (reused when idle, new ones on demand, Timeout enforced);
* the local Lambda endpoint (``LAMBDA_PORT``, default 3001) speaking the Invoke API;
* the local API gateway (``API_PORT``, default 3000): the HTTP API's routes, its JWT authorizer
  and API Gateway's payload format 2.0;
* schedules and SQS event sources of the functions;
* the demo OAuth2 provider (``provider/server.mjs``, ``PROVIDER_PORT``, default 3002) when installed.

``python -m devstack token --tenant acme [--user alice]`` (``make dev-token``) prints a bearer token
for the local API, whether the stack runs or not.

Tests use :class:`devstack.stack.Stack`::

    with Stack(state_dir=tmp_path) as stack:          # free ports, schedules off
        token = stack.mint_token("acme", "alice")
        requests.get(f"{stack.api_url}/connections", headers={"Authorization": f"Bearer {token}"})
        stack.boto3_client("dynamodb"); stack.lambda_client(); stack.physical_ids["ConnectionsTable"]
        stack.function_logs(); stack.published_events()

Environment given to every function on top of the template's: ``devstack.config.LOCAL_ENV_OVERRIDES``;
local template parameter values: ``devstack.config.LOCAL_PARAMETER_VALUES``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devstack.stack import FunctionError, Stack, StackError

__all__ = ["FunctionError", "Stack", "StackError"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``python -m devstack token`` does not import boto3.
    if name in __all__:
        from devstack import stack

        return getattr(stack, name)
    raise AttributeError(f"module 'devstack' has no attribute {name!r}")
