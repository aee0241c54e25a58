"""The local stack gives the consumer client to the functions the template gives ClientLayer, the way
Lambda does (the feed fetcher and the call engine's users), and to no other."""

from __future__ import annotations

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from devstack.template import load_template


def _client_layer_users() -> list[str]:
    resources = load_template(DEFAULT_TEMPLATE)["Resources"]
    return sorted(
        name
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Serverless::Function"
        and {"Ref": "ClientLayer"} in (resource["Properties"].get("Layers") or [])
    )


def test_the_client_layer_is_on_the_feed_fetchers_path_and_no_other(stack: Stack) -> None:
    client = (REPO_ROOT / "clients" / "python" / "src").resolve()
    shared = (REPO_ROOT / "layers" / "shared").resolve()
    users = _client_layer_users()
    assert {"FeedFetchFunction", "CallApiFunction"} <= set(users)
    assert sorted(name for name, spec in stack.functions.items() if client in spec.python_path) == users
    assert all(shared in spec.python_path for spec in stack.functions.values())
    assert (client / "oauth_connections_client" / "__init__.py").is_file()
