"""The AWS SDK models the layer ships (`make sdk-models`): botocore's own, for the services the service calls.

Every client reads them (core/aws.py): they must be what the installed botocore holds, answer for each
service exactly as botocore's full data does, and leave no other service to be found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import UnknownServiceError

from oauth_connections.core import aws
from oauth_connections.core.sdk_models_build import botocore_data, build

# One region of each partition the template may be deployed in.
REGIONS = ("eu-central-1", "us-east-1", "cn-north-1", "us-gov-west-1")


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_the_shipped_models_are_the_ones_the_installed_botocore_makes(tmp_path: Path) -> None:
    build(botocore_data(), tmp_path / "sdk_models")
    assert _files(tmp_path / "sdk_models") == _files(aws.SDK_MODELS), (
        "botocore or aws.SERVICES changed: run `make sdk-models`"
    )


def _shipped(region: str, service: str) -> object:
    """A client of the shipped models from a loader of its own: botocore adjusts a loaded model in place
    on a client's first call (S3 drops `{Bucket}` from its request URIs), so the process's shared loader
    holds what other tests' clients have called, not what was shipped."""
    session = botocore.session.get_session()
    session.register_component("data_loader", aws._sdk_models.__wrapped__())
    return session.create_client(service, region_name=region)


def _botocores(region: str, service: str) -> object:
    return botocore.session.get_session().create_client(service, region_name=region)


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("service", aws.SERVICES)
def test_a_client_of_the_shipped_models_has_every_operation_and_botocores_endpoint(
    service: str, region: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # the endpoint as resolved in AWS
    ours: object = _shipped(region, service)
    theirs: object = _botocores(region, service)
    assert ours.meta.endpoint_url == theirs.meta.endpoint_url  # type: ignore[attr-defined]
    ours_model, theirs_model = ours.meta.service_model, theirs.meta.service_model  # type: ignore[attr-defined]
    assert ours_model.operation_names == theirs_model.operation_names
    assert ours_model.client_context_parameters == theirs_model.client_context_parameters
    for name in ours_model.operation_names:
        operation, full = ours_model.operation_model(name), theirs_model.operation_model(name)
        assert (operation.http, operation.metadata) == (full.http, full.metadata), name
        assert _described(operation.input_shape) == _described(full.input_shape), name
        assert _described(operation.output_shape) == _described(full.output_shape), name


def _described(shape: Any, seen: frozenset[str] = frozenset()) -> Any:
    """What a shape means to a request and its parsing: its type, wire names, constraints and members."""
    if shape is None or shape.name in seen:
        return shape and shape.name
    seen = seen | {shape.name}
    nested = {
        name: _described(getattr(shape, name), seen) for name in ("member", "key", "value") if hasattr(shape, name)
    }
    members = {name: _described(member, seen) for name, member in getattr(shape, "members", {}).items()}
    return (
        shape.name,
        shape.type_name,
        shape.serialization,
        shape.metadata,
        getattr(shape, "enum", None),
        nested,
        members,
    )


def test_the_s3_client_addresses_a_bucket_as_botocore_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 resolves by its rule set, which botocore takes only with its built-in endpoint data."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    params = {"Bucket": "feeds-bucket", "Key": "feeds/t/f/latest.yml"}
    ours: object = _shipped("eu-central-1", "s3")
    theirs: object = _botocores("eu-central-1", "s3")
    url, expected = (c.generate_presigned_url("get_object", Params=params) for c in (ours, theirs))  # type: ignore[attr-defined]
    assert url.split("?")[0] == expected.split("?")[0] == "https://feeds-bucket.s3.amazonaws.com/feeds/t/f/latest.yml"


def test_a_service_the_service_does_not_call_is_unknown() -> None:
    with pytest.raises(UnknownServiceError):
        _shipped("eu-central-1", "sts")
