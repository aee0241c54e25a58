"""template.yaml is the one source of truth: the code must agree with it."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest
from pynamodb.attributes import TTLAttribute

from oauth_connections import storage
from oauth_connections.api.routes import API_ROUTERS
from tests.conftest import REPO


@cache
def template() -> dict[str, Any]:
    from cfnlint.decode import decode

    decoded, matches = decode(str(REPO / "template.yaml"))
    assert not matches
    return dict(decoded)


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template()["Resources"].items() if v["Type"] == kind}


def test_storage_models_match_the_table_definition() -> None:
    table = template()["Resources"]["ConnectionsTable"]["Properties"]
    key_schema = {k["KeyType"]: k["AttributeName"] for k in table["KeySchema"]}
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    for model in storage.MODELS:
        attributes = model.get_attributes()
        hash_key = next(a for a in attributes.values() if a.is_hash_key)
        range_key = next(a for a in attributes.values() if a.is_range_key)
        assert (hash_key.attr_name, range_key.attr_name) == (key_schema["HASH"], key_schema["RANGE"])
        assert hash_key.attr_type == types[hash_key.attr_name]
        assert range_key.attr_type == types[range_key.attr_name]
        ttl = [a.attr_name for a in attributes.values() if isinstance(a, TTLAttribute)]
        assert ttl in ([], [table["TimeToLiveSpecification"]["AttributeName"]])
    indexes = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
    model_indexes = {index.Meta.index_name: index for index in storage.ConnectionRecord._indexes.values()}
    assert set(indexes) == set(model_indexes)
    for name, index in model_indexes.items():
        schema = {k["KeyType"]: k["AttributeName"] for k in indexes[name]["KeySchema"]}
        key_schema_of_model = index._get_schema()["key_schema"]
        assert {k["KeyType"]: k["AttributeName"] for k in key_schema_of_model} == schema
        for key in schema.values():
            model_attribute = storage.ConnectionRecord.get_attributes()[key]
            assert model_attribute.attr_type == types[key]
        assert indexes[name]["Projection"]["ProjectionType"] == index.Meta.projection.projection_type
    assert table["TimeToLiveSpecification"]["Enabled"] is True
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True


def test_every_function_has_its_code() -> None:
    for logical_id, function in resources("AWS::Serverless::Function").items():
        properties = function["Properties"]
        assert re.fullmatch(r"[A-Z][A-Za-z]+Function", logical_id)
        app = REPO / properties["CodeUri"] / "app.py"
        assert app.is_file(), logical_id
        assert properties["Handler"] == "app.lambda_handler"
        assert "lambda_handler" in app.read_text()


def _template_routes() -> set[tuple[str, str]]:
    routes = set()
    for function in resources("AWS::Serverless::Function").values():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                routes.add((event["Properties"]["Method"].upper(), event["Properties"]["Path"]))
    return routes


def _code_routes() -> set[tuple[str, str]]:
    routes = set()
    for router in API_ROUTERS:
        for path, methods, *_rest in router._routes:
            for method in methods if isinstance(methods, (list, tuple)) else [methods]:
                routes.add((method.upper(), re.sub(r"<(\w+)>", r"{\1}", path)))
    return routes


def test_api_routes_match_the_template() -> None:
    assert _code_routes() == _template_routes()


@pytest.mark.parametrize("logical_id", sorted(resources("AWS::Serverless::Function")))
def test_functions_log_to_their_own_group_with_retention(logical_id: str) -> None:
    properties = resources("AWS::Serverless::Function")[logical_id]["Properties"]
    group = properties["LoggingConfig"]["LogGroup"]["Ref"]
    assert template()["Resources"][group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_kms_key_rotates_and_has_an_alias() -> None:
    key = template()["Resources"]["EncryptionKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    aliases = resources("AWS::KMS::Alias")
    assert any(a["Properties"]["TargetKeyId"] == {"Ref": "EncryptionKey"} for a in aliases.values())
