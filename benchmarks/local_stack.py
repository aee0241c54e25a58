"""The local stack (devstack) with one connection made through the real provider, for the benchmarks that
invoke GetTokenFunction through the local Lambda endpoint.

Its function logs go to the stack's log files, never to the console.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from tests.support.provider import OidcProvider, standard_clients
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import callback_url, connect, create_connection, get_token, new_tenant

RETURN_URL = "http://127.0.0.1:5173/done"


@dataclass(frozen=True)
class Connected:
    stack: Stack
    tenant: str
    connection_id: str

    @property
    def payload(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant, "connection_id": self.connection_id}

    def warm(self) -> None:
        get_token(self.stack, self.tenant, self.connection_id)


@contextmanager
def connected_stack(
    *,
    parameter_overrides: Mapping[str, Any] | None = None,
    env_overrides: Mapping[str, str] | None = None,
    on_start: Callable[[Stack], None] = lambda stack: None,
) -> Iterator[Connected]:
    with (
        tempfile.TemporaryDirectory() as state_dir,
        Stack(
            template_path=DEFAULT_TEMPLATE,
            repo_root=REPO_ROOT,
            state_dir=state_dir,
            parameter_overrides=dict(parameter_overrides or {}),
            env_overrides=dict(env_overrides or {}),
            echo_logs=False,
        ) as stack,
    ):
        on_start(stack)
        with OidcProvider(standard_clients([callback_url(stack)])) as provider:
            tenant = new_tenant("bench")
            api = ApiClient(stack).as_tenant(tenant)
            connection_id = create_connection(api, provider)["id"]
            connect(api, connection_id, RETURN_URL)
            yield Connected(stack, tenant, connection_id)
