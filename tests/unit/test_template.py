"""template.yaml is the one source of truth: the code must agree with it."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest
from pydantic import ValidationError
from pynamodb.attributes import TTLAttribute

from devstack.template import Resolver
from oauth_connections.core.config import Settings
from oauth_connections.entrypoints.http import access
from oauth_connections.entrypoints.http.openapi_build import API_ROUTERS, build_document
from oauth_connections.storage.binding import MODELS
from oauth_connections.storage.connections import ConnectionRecord
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
    for model in MODELS:
        attributes = model.get_attributes()
        hash_key = next(a for a in attributes.values() if a.is_hash_key)
        range_key = next(a for a in attributes.values() if a.is_range_key)
        assert (hash_key.attr_name, range_key.attr_name) == (key_schema["HASH"], key_schema["RANGE"])
        assert hash_key.attr_type == types[hash_key.attr_name]
        assert range_key.attr_type == types[range_key.attr_name]
        ttl = [a.attr_name for a in attributes.values() if isinstance(a, TTLAttribute)]
        assert ttl in ([], [table["TimeToLiveSpecification"]["AttributeName"]])
    indexes = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
    model_indexes = {index.Meta.index_name: index for index in ConnectionRecord._indexes.values()}
    assert set(indexes) == set(model_indexes)
    for name, index in model_indexes.items():
        schema = {k["KeyType"]: k["AttributeName"] for k in indexes[name]["KeySchema"]}
        key_schema_of_model = index._get_schema()["key_schema"]
        assert {k["KeyType"]: k["AttributeName"] for k in key_schema_of_model} == schema
        for key in schema.values():
            model_attribute = ConnectionRecord.get_attributes()[key]
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


# ------------------------------------------------------------------ scopes: the document says, the template enforces


def _documented_security() -> dict[tuple[str, str], list[dict[str, list[str]]]]:
    """Each operation of the OpenAPI document with its security requirement (alternatives)."""
    document = build_document()
    return {
        (method.upper(), path): operation.get("security", [])
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }


def _template_auth(**parameters: str) -> dict[tuple[str, str], tuple[str, list[str]]]:
    """Each HttpApi route of the template: (its authorizer, its scopes) as deployed with these parameters."""
    declared = template()["Parameters"]
    values = {name: parameters.get(name, definition.get("Default")) for name, definition in declared.items()}

    def no_resources(logical_id: str, attribute: str | None) -> Any:
        raise AssertionError(f"a route's auth refers to the resource {logical_id}")

    resolver = Resolver(parameters=values, attribute=no_resources, conditions=template()["Conditions"])
    default = template()["Resources"]["HttpApi"]["Properties"]["Auth"]["DefaultAuthorizer"]
    routes = {}
    for function in resources("AWS::Serverless::Function").values():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                properties = event["Properties"]
                auth = properties.get("Auth", {})
                scopes = resolver.resolve(auth.get("AuthorizationScopes", []))
                routes[(properties["Method"].upper(), properties["Path"])] = (auth.get("Authorizer", default), scopes)
    return routes


def test_every_route_requires_the_scopes_its_operation_documents() -> None:
    documented = _documented_security()
    routes = _template_auth()
    assert set(documented) <= set(routes)
    for route, (authorizer, scopes) in routes.items():
        if route not in documented:  # the browser's pages of the authorization flow
            assert (authorizer, scopes) == ("NONE", []), route
            continue
        alternatives = documented[route]
        assert alternatives in (access.READ, access.MANAGE), route
        # API Gateway lets a token through with ANY of the route's scopes: one scope per alternative.
        accepted = [scope for alternative in alternatives for scope in alternative[access.BEARER_SCHEME]]
        # SAM applies AuthorizationScopes only with an explicit Authorizer on the event.
        assert authorizer == "TenantJwtAuthorizer", route
        assert sorted(scopes) == sorted(accepted), route


def test_reading_routes_accept_either_scope_and_the_others_only_manage() -> None:
    for (method, path), alternatives in _documented_security().items():
        expected = access.READ if method == "GET" else access.MANAGE
        assert alternatives == expected, (method, path)


def test_scopes_can_be_turned_off_for_tokens_without_any() -> None:
    routes = _template_auth(RequireScopes="false")
    assert routes and all(scopes == [] for _, scopes in routes.values())
    renamed = _template_auth(ReadScope="crm/read", ManageScope="crm/admin")
    assert renamed[("GET", "/connections")][1] == ["crm/read", "crm/admin"]
    assert renamed[("DELETE", "/connections/{connection_id}")][1] == ["crm/admin"]


def test_scope_names_agree_between_the_template_the_document_and_the_settings() -> None:
    parameters = template()["Parameters"]
    assert parameters["RequireScopes"]["Default"] == "true"
    assert parameters["ReadScope"]["Default"] == access.READ_SCOPE
    assert parameters["ManageScope"]["Default"] == access.MANAGE_SCOPE
    defaults = Settings.model_fields
    assert (defaults["read_scope"].default, defaults["manage_scope"].default) == (
        access.READ_SCOPE,
        access.MANAGE_SCOPE,
    )
    environment = resources("AWS::Serverless::Function")["OpenApiFunction"]["Properties"]["Environment"]["Variables"]
    assert environment == {
        "REQUIRE_SCOPES": {"Ref": "RequireScopes"},
        "READ_SCOPE": {"Ref": "ReadScope"},
        "MANAGE_SCOPE": {"Ref": "ManageScope"},
    }


@pytest.mark.parametrize("scope", ["connections:read", "crm/admin", "https://api.example.com/feeds.write"])
def test_scope_parameters_accept_oauth_scope_tokens(scope: str) -> None:
    for name in ("ReadScope", "ManageScope"):
        assert re.fullmatch(template()["Parameters"][name]["AllowedPattern"], scope)


@pytest.mark.parametrize("scope", ["", "two words", 'quote"d', "back\\slash"])
def test_scope_parameters_refuse_what_no_scope_token_is(scope: str) -> None:
    for name in ("ReadScope", "ManageScope"):
        assert not re.fullmatch(template()["Parameters"][name]["AllowedPattern"], scope)


def test_refresh_batch_concurrency_agrees_between_the_settings_the_parameter_and_the_batch_size() -> None:
    """The worker may refresh a whole batch at once and no more: the setting's bound, the template
    parameter's range and the queue mapping's BatchSize are one number, and the defaults agree."""
    parameter = template()["Parameters"]["RefreshBatchConcurrency"]
    worker = resources("AWS::Serverless::Function")["RefreshWorkerFunction"]["Properties"]
    mapping = worker["Events"]["Queue"]["Properties"]
    field = Settings.model_fields["refresh_batch_concurrency"]
    bounds = {type(m).__name__: m for m in field.metadata}
    assert bounds["Ge"].ge == parameter["MinValue"] == 1
    assert bounds["Le"].le == parameter["MaxValue"] == mapping["BatchSize"]
    assert field.default == parameter["Default"] == mapping["BatchSize"]
    assert worker["Environment"]["Variables"]["REFRESH_BATCH_CONCURRENCY"] == {"Ref": "RefreshBatchConcurrency"}
    with pytest.raises(ValidationError):
        Settings(connections_table_name="t", refresh_batch_concurrency=mapping["BatchSize"] + 1)


def test_the_refresh_queue_mapping_is_one_lambda_accepts() -> None:
    """Above 10 messages a batch needs a batching window of at least a second (standard queues), and the
    queue hides a received message for at least six times the worker's timeout, which also covers the
    window a message waits in before the worker starts."""
    worker = resources("AWS::Serverless::Function")["RefreshWorkerFunction"]["Properties"]
    mapping = worker["Events"]["Queue"]["Properties"]
    queue = template()["Resources"]["RefreshQueue"]["Properties"]
    window = mapping["MaximumBatchingWindowInSeconds"]
    assert mapping["BatchSize"] > 10 and window >= 1
    assert "FifoQueue" not in queue
    assert queue["VisibilityTimeout"] >= 6 * worker["Timeout"]
    assert queue["VisibilityTimeout"] >= worker["Timeout"] + window
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
