"""The local stack gives FeedFetchFunction the consumer client the way Lambda does: through ClientLayer."""

from __future__ import annotations

from devstack import Stack
from devstack.config import REPO_ROOT


def test_the_client_layer_is_on_the_feed_fetchers_path_and_no_other(stack: Stack) -> None:
    client = (REPO_ROOT / "clients" / "python" / "src").resolve()
    shared = (REPO_ROOT / "layers" / "shared").resolve()
    assert sorted(name for name, spec in stack.functions.items() if client in spec.python_path) == ["FeedFetchFunction"]
    assert all(shared in spec.python_path for spec in stack.functions.values())
    assert (client / "oauth_connections_client" / "__init__.py").is_file()
