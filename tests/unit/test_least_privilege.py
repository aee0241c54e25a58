"""Least privilege, read from template.yaml: each function has exactly the IAM actions it needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest

from tests.unit.test_template import resources, template


@dataclass(frozen=True)
class Role:
    """One thing a function does: the IAM actions it takes for it, and the purposes of the encryption
    context its KMS decryption and data keys are bound to (none where S3 uses the key on its behalf)."""

    name: str
    actions: frozenset[str]
    decrypt: frozenset[str] = frozenset()
    encrypt: frozenset[str] = frozenset()
    encrypt_via_s3: bool = False


def role(name: str, *actions: str, decrypt: tuple[str, ...] = (), encrypt: tuple[str, ...] = ()) -> Role:
    return Role(name, frozenset(actions), frozenset(decrypt), frozenset(encrypt))


READS_ITEMS = role("reads items by key", "dynamodb:GetItem")
QUERIES_ITEMS = role("lists items", "dynamodb:Query")
PUTS_ITEMS = role("creates or replaces items", "dynamodb:PutItem")
UPDATES_ITEMS = role("updates items", "dynamodb:UpdateItem")
DELETES_ITEMS = role("deletes items", "dynamodb:DeleteItem")
RECORDS_ACTIVITY = role("records activity", "dynamodb:PutItem")
PUBLISHES_EVENTS = role("publishes events", "events:PutEvents")
SENDS_MESSAGES = role("sends queue messages", "sqs:SendMessage")
INVOKES_FUNCTIONS = role("invokes functions", "lambda:InvokeFunction")
# A connection's values open with its data key (purpose `connection`); older values are KMS messages of their own.
DECRYPTS_TOKENS = role("decrypts tokens", "kms:Decrypt", decrypt=("tokens", "connection"))
DECRYPTS_CLIENT_SECRET = role("decrypts the client secret", "kms:Decrypt", decrypt=("client_secret", "connection"))
DECRYPTS_FLOWS = role("decrypts flows", "kms:Decrypt", decrypt=("flow",))
MAKES_CONNECTION_KEYS = role("makes connection keys", "kms:GenerateDataKey", encrypt=("connection",))
ENCRYPTS_FLOWS = role("encrypts flows", "kms:GenerateDataKey", encrypt=("flow",))
WRITES_FEEDS_BUCKET = Role(
    "writes the feeds bucket",
    frozenset({"s3:PutObject", "s3:AbortMultipartUpload", "kms:GenerateDataKey", "kms:Decrypt"}),
    encrypt_via_s3=True,
)
# Refreshing reads the grant, stores the new tokens (sealed anew under a new key where older values were
# KMS messages), records the refresh and publishes its outcome: everything that may refresh does all of it.
REFRESHES_TOKENS = (
    READS_ITEMS,
    UPDATES_ITEMS,
    RECORDS_ACTIVITY,
    DECRYPTS_TOKENS,
    DECRYPTS_CLIENT_SECRET,
    MAKES_CONNECTION_KEYS,
    PUBLISHES_EVENTS,
)

# What each function does. KMS decryption is also bound to purposes of the encryption context.
ROLES: dict[str, tuple[Role, ...]] = {
    "ListConnectionsFunction": (QUERIES_ITEMS,),
    "GetConnectionFunction": (READS_ITEMS,),
    "ListConnectionActivityFunction": (READS_ITEMS, QUERIES_ITEMS),
    "ListActivityFunction": (QUERIES_ITEMS,),
    "CreateConnectionFunction": (PUTS_ITEMS, RECORDS_ACTIVITY, MAKES_CONNECTION_KEYS, PUBLISHES_EVENTS),
    # A grant-ending edit revokes the old grant (its tokens and secret); a new secret retries a refresh.
    "UpdateConnectionFunction": (*REFRESHES_TOKENS, PUTS_ITEMS, DELETES_ITEMS),
    "DeleteConnectionFunction": (
        READS_ITEMS,
        DELETES_ITEMS,
        RECORDS_ACTIVITY,
        DECRYPTS_TOKENS,
        DECRYPTS_CLIENT_SECRET,
        PUBLISHES_EVENTS,
    ),
    "OpenApiFunction": (),
    "ListProvidersFunction": (),
    "StartAuthorizationFunction": (
        READS_ITEMS,
        PUTS_ITEMS,
        UPDATES_ITEMS,
        RECORDS_ACTIVITY,
        DECRYPTS_CLIENT_SECRET,
        MAKES_CONNECTION_KEYS,
        PUBLISHES_EVENTS,
    ),
    "AuthorizeRedirectFunction": (READS_ITEMS, UPDATES_ITEMS, PUTS_ITEMS, ENCRYPTS_FLOWS),
    "OAuthCallbackFunction": (
        READS_ITEMS,
        UPDATES_ITEMS,
        PUTS_ITEMS,
        RECORDS_ACTIVITY,
        DECRYPTS_FLOWS,
        DECRYPTS_CLIENT_SECRET,
        MAKES_CONNECTION_KEYS,
        PUBLISHES_EVENTS,
    ),
    "GetTokenFunction": REFRESHES_TOKENS,
    "CallApiFunction": REFRESHES_TOKENS,
    "RefreshConnectionFunction": REFRESHES_TOKENS,
    "TestConnectionFunction": REFRESHES_TOKENS,
    "RefreshSchedulerFunction": (QUERIES_ITEMS, SENDS_MESSAGES),
    "RefreshWorkerFunction": REFRESHES_TOKENS,
    "ListFeedsFunction": (QUERIES_ITEMS,),
    "GetFeedFunction": (READS_ITEMS,),
    "CreateFeedFunction": (READS_ITEMS, PUTS_ITEMS, RECORDS_ACTIVITY),
    "UpdateFeedFunction": (READS_ITEMS, PUTS_ITEMS, RECORDS_ACTIVITY),
    "DeleteFeedFunction": (READS_ITEMS, DELETES_ITEMS, RECORDS_ACTIVITY),
    "RunFeedFunction": (READS_ITEMS, SENDS_MESSAGES),
    "ListFeedRunsFunction": (READS_ITEMS, QUERIES_ITEMS),
    "ListFeedActivityFunction": (READS_ITEMS, QUERIES_ITEMS),
    "FeedDispatcherFunction": (QUERIES_ITEMS, READS_ITEMS, UPDATES_ITEMS, SENDS_MESSAGES),
    "FeedFetchFunction": (
        INVOKES_FUNCTIONS,
        READS_ITEMS,
        PUTS_ITEMS,
        UPDATES_ITEMS,
        RECORDS_ACTIVITY,
        WRITES_FEEDS_BUCKET,
        PUBLISHES_EVENTS,
    ),
}


def combined(roles: tuple[Role, ...]) -> Role:
    """What a function with these roles may do: the union of their actions and purposes."""
    return Role(
        " + ".join(r.name for r in roles),
        frozenset().union(*(r.actions for r in roles)),
        frozenset().union(*(r.decrypt for r in roles)),
        frozenset().union(*(r.encrypt for r in roles)),
        any(r.encrypt_via_s3 for r in roles),
    )


EXPECTED: dict[str, Role] = {function: combined(roles) for function, roles in ROLES.items()}

# The feeds bucket is SSE-KMS under EncryptionKey with a bucket key. Through S3, a write needs a data key
# (kms:GenerateDataKey) and, for the parts of a multipart upload, its decryption (kms:Decrypt); a read
# needs kms:Decrypt. With a bucket key the encryption context S3 gives KMS is the bucket's ARN.
BUCKET_WRITES = {"s3:PutObject"}
BUCKET_READS = {"s3:GetObject", "s3:GetObjectVersion"}
VIA_S3 = {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}
BUCKET_CONTEXT = {"Fn::GetAtt": ["FeedsBucket", "Arn"]}


@cache
def statements(function: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for policy in resources("AWS::Serverless::Function")[function]["Properties"].get("Policies", []):
        if isinstance(policy, dict) and "Statement" in policy:
            found += policy["Statement"]
        elif policy == {"Ref": "GetTokenInvokePolicy"}:
            managed = template()["Resources"]["GetTokenInvokePolicy"]["Properties"]["PolicyDocument"]
            found += managed["Statement"]
        else:
            pytest.fail(f"{function} uses a policy the test cannot read: {policy}")
    return found


def actions_of(function: str) -> set[str]:
    result: set[str] = set()
    for statement in statements(function):
        action = statement["Action"]
        result.update([action] if isinstance(action, str) else action)
    return result


def purposes(function: str, action: str) -> set[str]:
    found: set[str] = set()
    for statement in statements(function):
        listed = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        if action in listed:
            condition = statement.get("Condition", {}).get("StringEquals", {})
            value = condition.get("kms:EncryptionContext:purpose")
            assert value or "kms:ViaService" in condition, f"{function}: {action} without a condition"
            if value:
                found.update([value] if isinstance(value, str) else value)
    return found


def test_every_function_is_covered() -> None:
    assert set(resources("AWS::Serverless::Function")) == set(EXPECTED)


@pytest.mark.parametrize("function", sorted(EXPECTED))
def test_actions_are_exactly_the_needed_ones(function: str) -> None:
    assert actions_of(function) == EXPECTED[function].actions


@pytest.mark.parametrize("function", sorted(EXPECTED))
def test_no_wildcards(function: str) -> None:
    for statement in statements(function):
        assert statement["Effect"] == "Allow"
        listed = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        assert not any("*" in action for action in listed)
        assert statement["Resource"] != "*"


@pytest.mark.parametrize("function", sorted(EXPECTED))
def test_kms_use_is_bound_to_purposes(function: str) -> None:
    spec = EXPECTED[function]
    assert purposes(function, "kms:Decrypt") == spec.decrypt
    if not spec.encrypt_via_s3:
        assert purposes(function, "kms:GenerateDataKey") == spec.encrypt


def test_only_token_users_can_decrypt_tokens() -> None:
    token_readers = {name for name in EXPECTED if "tokens" in purposes(name, "kms:Decrypt")}
    assert token_readers == {
        "CallApiFunction",
        "DeleteConnectionFunction",
        "GetTokenFunction",
        "RefreshConnectionFunction",
        "RefreshWorkerFunction",
        "TestConnectionFunction",
        "UpdateConnectionFunction",
    }
    readers = {name for name in EXPECTED if "kms:Decrypt" in actions_of(name)}
    writers = {name for name in EXPECTED if "kms:GenerateDataKey" in actions_of(name)}
    read_only_api = {
        "ListConnectionsFunction",
        "GetConnectionFunction",
        "ListFeedsFunction",
        "GetFeedFunction",
        "OpenApiFunction",
    }
    assert not read_only_api & (readers | writers)


def test_key_policy_delegates_to_iam_only() -> None:
    key = template()["Resources"]["EncryptionKey"]["Properties"]
    statements_of_key = key["KeyPolicy"]["Statement"]
    assert len(statements_of_key) == 1
    principal = statements_of_key[0]["Principal"]["AWS"]
    assert principal == {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    assert key["EnableKeyRotation"] is True


@pytest.mark.parametrize("function", ["GetTokenFunction", "CallApiFunction"])
def test_each_invoke_policy_names_only_its_function(function: str) -> None:
    policy = function.removesuffix("Function") + "InvokePolicy"
    document = template()["Resources"][policy]["Properties"]["PolicyDocument"]
    assert document["Statement"] == [
        {
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": [{"Fn::GetAtt": [function, "Arn"]}, {"Fn::Sub": f"${{{function}.Arn}}:live"}],
        }
    ]
    output = template()["Outputs"][f"{policy}Arn"]
    assert output["Value"] == {"Ref": policy}
    assert output["Export"]["Name"] == {"Fn::Sub": f"${{AWS::StackName}}-{policy}Arn"}


def test_api_is_throttled_and_bodies_are_limited() -> None:
    api = template()["Resources"]["HttpApi"]["Properties"]
    assert api["DefaultRouteSettings"]["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    assert api["DefaultRouteSettings"]["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert template()["Globals"]["Function"]["Environment"]["Variables"]["MAX_BODY_BYTES"] == {
        "Ref": "MaxRequestBodyBytes"
    }


def test_public_routes_are_only_the_browser_ones() -> None:
    public = set()
    for name, function in resources("AWS::Serverless::Function").items():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi" and event["Properties"].get("Auth", {}).get("Authorizer") == "NONE":
                public.add(name)
    assert public == {"AuthorizeRedirectFunction", "OAuthCallbackFunction"}


def listed_actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def names_feeds_bucket(resource: Any) -> bool:
    return "FeedsBucket" in json.dumps(resource)


def feeds_bucket_actions(function: str) -> set[str]:
    return {
        action
        for statement in statements(function)
        if names_feeds_bucket(statement["Resource"])
        for action in listed_actions(statement)
        if action.startswith("s3:")
    }


def via_s3_statements(function: str) -> list[dict[str, Any]]:
    return [
        statement
        for statement in statements(function)
        if statement.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService") is not None
    ]


@pytest.mark.parametrize("function", sorted(EXPECTED))
def test_feeds_bucket_users_may_use_its_key_through_s3_as_s3_requires(function: str) -> None:
    used = feeds_bucket_actions(function)
    needed = set()
    if used & BUCKET_WRITES:
        needed = {"kms:GenerateDataKey", "kms:Decrypt"}
    elif used & BUCKET_READS:
        needed = {"kms:Decrypt"}
    through_s3 = via_s3_statements(function)
    assert {action for statement in through_s3 for action in listed_actions(statement)} == needed
    for statement in through_s3:
        assert statement["Resource"] == {"Fn::GetAtt": ["EncryptionKey", "Arn"]}
        assert statement["Condition"] == {
            "StringEquals": {"kms:ViaService": VIA_S3, "kms:EncryptionContext:aws:s3:arn": BUCKET_CONTEXT}
        }


def test_the_feeds_bucket_has_a_writer_and_a_bucket_key_under_the_service_key() -> None:
    writers = {name for name in EXPECTED if feeds_bucket_actions(name) & BUCKET_WRITES}
    assert writers == {"FeedFetchFunction"}
    encryption = template()["Resources"]["FeedsBucket"]["Properties"]["BucketEncryption"]
    (rule,) = encryption["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": ["EncryptionKey", "Arn"]},
    }
    assert rule["BucketKeyEnabled"] is True  # what makes the bucket's ARN the encryption context


# The functions that append to the activity log; each may put items under ACTIVITY# keys (and only there,
# unless it writes other items too). A refresh is recorded, so every function that may refresh writes.
ACTIVITY_WRITERS = {function for function, roles in ROLES.items() if RECORDS_ACTIVITY in roles}
ACTIVITY_KEYS = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["ACTIVITY#*"]}}
NOT_ACTIVITY_KEYS = {"ForAllValues:StringNotLike": {"dynamodb:LeadingKeys": ["ACTIVITY#*"]}}
DYNAMODB_WRITES = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}


def activity_routes() -> dict[str, str]:
    """The functions of the template's routes that read an activity log, with their paths."""
    return {
        name: event["Properties"]["Path"]
        for name, function in resources("AWS::Serverless::Function").items()
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] == "HttpApi" and event["Properties"]["Path"].rsplit("/", 1)[-1] == "activity"
    }


ACTIVITY_READERS = set(activity_routes())


def test_every_activity_route_is_a_reader() -> None:
    assert activity_routes() == {
        "ListConnectionActivityFunction": "/connections/{connection_id}/activity",
        "ListFeedActivityFunction": "/feeds/{feed_id}/activity",
        "ListActivityFunction": "/activity",
    }


def activity_statements(function: str) -> list[dict[str, Any]]:
    return [s for s in statements(function) if s.get("Condition") == ACTIVITY_KEYS]


@pytest.mark.parametrize("function", sorted(EXPECTED))
def test_only_activity_writers_may_put_activity_and_only_readers_query_it(function: str) -> None:
    granted = [action for statement in activity_statements(function) for action in listed_actions(statement)]
    expected = ["dynamodb:PutItem"] if function in ACTIVITY_WRITERS else []
    assert granted == (["dynamodb:Query"] if function in ACTIVITY_READERS else expected)


@pytest.mark.parametrize("function", sorted(ACTIVITY_READERS))
def test_activity_readers_query_only_the_activity_log(function: str) -> None:
    queries = [s for s in statements(function) if "dynamodb:Query" in listed_actions(s)]
    assert queries == [
        {
            "Effect": "Allow",
            "Action": "dynamodb:Query",
            "Resource": {"Fn::GetAtt": ["ConnectionsTable", "Arn"]},
            "Condition": ACTIVITY_KEYS,
        }
    ]


@pytest.mark.parametrize("function", sorted(EXPECTED))
def test_no_function_may_change_or_delete_an_activity_entry(function: str) -> None:
    """A write of the table's other items excludes ACTIVITY# keys; under them, only a writer's put."""
    for statement in statements(function):
        writes = set(listed_actions(statement)) & DYNAMODB_WRITES
        if not writes:
            continue
        assert statement["Resource"] == {"Fn::GetAtt": ["ConnectionsTable", "Arn"]}, statement
        if statement.get("Condition") == ACTIVITY_KEYS:
            assert function in ACTIVITY_WRITERS and listed_actions(statement) == ["dynamodb:PutItem"], statement
        else:
            assert statement.get("Condition") == NOT_ACTIVITY_KEYS, statement
