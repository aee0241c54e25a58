"""The local stack's IAM emulation: the evaluator against template.yaml's own policies, and the requests
it derives from what boto3 and pynamodb send."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from devstack import config
from devstack._moto_main import embedded_aws_application
from devstack.iam import (
    FunctionPolicy,
    IamEnforcement,
    Request,
    Resources,
    Statement,
    access_key_for,
    condition_holds,
    credential_of,
    dynamodb_requests,
    events_requests,
    function_statements,
    invocation_refusal,
    is_allowed,
    kms_requests,
    s3_requests,
    sqs_requests,
)
from devstack.template import Resolver, function_properties, load_template, parameter_values

PREFIX = f"arn:aws:{{}}:{config.REGION}:{config.ACCOUNT_ID}:"
TABLE = PREFIX.format("dynamodb") + "table/connections"
DUE_INDEX = TABLE + "/index/DueIndex"
KEY = PREFIX.format("kms") + "key/service-key"
BUS = PREFIX.format("events") + "event-bus/default"
REFRESH_QUEUE = PREFIX.format("sqs") + "refresh-queue"
FEED_QUEUE = PREFIX.format("sqs") + "feed-queue"
BUCKET = "arn:aws:s3:::feeds-bucket"
GET_TOKEN = PREFIX.format("lambda") + "function:get-token"

ATTRIBUTES: dict[tuple[str, str | None], str] = {
    ("ConnectionsTable", "Arn"): TABLE,
    ("ConnectionsTable", None): "connections",
    ("EncryptionKey", "Arn"): KEY,
    ("RefreshQueue", "Arn"): REFRESH_QUEUE,
    ("FeedFetchQueue", "Arn"): FEED_QUEUE,
    ("FeedsBucket", "Arn"): BUCKET,
    ("GetTokenFunction", "Arn"): GET_TOKEN,
}


@cache
def policies() -> dict[str, list[Statement]]:
    template = load_template(config.DEFAULT_TEMPLATE)
    fields = {"api_url": "http://127.0.0.1:1", "lambda_url": "", "aws_url": "", "console_url": ""}
    resolver = Resolver(
        parameters=parameter_values(template, {}, fields),
        attribute=lambda logical_id, name: ATTRIBUTES[(logical_id, name)],
        conditions=template.get("Conditions"),
    )
    return {
        logical_id: function_statements(template, function_properties(template, resource), resolver.resolve)
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def item(action: str, pk: str) -> Request:
    return Request(f"dynamodb:{action}", TABLE, {"dynamodb:leadingkeys": (pk,)})


def kms(action: str, purpose: str) -> Request:
    return Request(f"kms:{action}", KEY, {"kms:encryptioncontext:purpose": (purpose,)})


CONNECTION = "TENANT#acme"
ACTIVITY = "ACTIVITY#acme#c1"
EVENTS = Request("events:PutEvents", BUS)

# Per function: requests its work needs (allowed) and neighbouring ones its policy must refuse.
SAMPLES: dict[str, tuple[list[Request], list[Request]]] = {
    "ListConnectionsFunction": ([item("Query", CONNECTION)], [item("GetItem", CONNECTION), kms("Decrypt", "tokens")]),
    "ListProvidersFunction": ([], [item("Query", CONNECTION)]),
    "OpenApiFunction": ([], [item("GetItem", CONNECTION)]),
    "ListConnectionActivityFunction": (
        [item("GetItem", CONNECTION), item("Query", ACTIVITY)],
        [item("Query", CONNECTION), item("PutItem", ACTIVITY)],
    ),
    "ListActivityFunction": ([item("Query", "ACTIVITY#acme")], [item("Query", CONNECTION)]),
    "GetConnectionFunction": ([item("GetItem", CONNECTION)], [kms("Decrypt", "connection"), item("Query", CONNECTION)]),
    "CreateConnectionFunction": (
        [item("PutItem", CONNECTION), item("PutItem", ACTIVITY), kms("GenerateDataKey", "connection"), EVENTS],
        [kms("Decrypt", "connection"), kms("GenerateDataKey", "flow"), item("DeleteItem", CONNECTION)],
    ),
    "UpdateConnectionFunction": (
        [
            item("UpdateItem", CONNECTION),
            item("DeleteItem", CONNECTION),
            item("PutItem", ACTIVITY),
            kms("Decrypt", "tokens"),
            kms("Decrypt", "client_secret"),
            kms("Decrypt", "connection"),
            kms("GenerateDataKey", "connection"),
            EVENTS,
        ],
        [kms("Decrypt", "flow"), item("UpdateItem", ACTIVITY), item("DeleteItem", ACTIVITY)],
    ),
    "DeleteConnectionFunction": (
        [item("DeleteItem", CONNECTION), kms("Decrypt", "tokens"), item("PutItem", ACTIVITY), EVENTS],
        [item("PutItem", CONNECTION), item("DeleteItem", ACTIVITY), kms("GenerateDataKey", "connection")],
    ),
    "StartAuthorizationFunction": (
        [item("PutItem", CONNECTION), kms("Decrypt", "client_secret"), kms("GenerateDataKey", "connection")],
        [kms("Decrypt", "tokens"), kms("GenerateDataKey", "flow"), item("DeleteItem", CONNECTION)],
    ),
    "AuthorizeRedirectFunction": (
        [item("UpdateItem", "FLOW#x"), item("PutItem", "FLOW#x"), kms("GenerateDataKey", "flow")],
        [kms("Decrypt", "flow"), kms("GenerateDataKey", "connection"), item("PutItem", ACTIVITY), EVENTS],
    ),
    "OAuthCallbackFunction": (
        [kms("Decrypt", "flow"), kms("Decrypt", "client_secret"), kms("GenerateDataKey", "connection"), EVENTS],
        [kms("Decrypt", "tokens"), item("DeleteItem", CONNECTION)],
    ),
    "GetTokenFunction": (
        [item("UpdateItem", CONNECTION), kms("Decrypt", "tokens"), kms("GenerateDataKey", "connection")],
        [item("PutItem", CONNECTION), kms("Decrypt", "flow"), item("Query", CONNECTION)],
    ),
    "CallApiFunction": ([kms("Decrypt", "tokens"), item("PutItem", ACTIVITY)], [item("DeleteItem", CONNECTION)]),
    "TestConnectionFunction": ([kms("Decrypt", "tokens"), EVENTS], [item("PutItem", CONNECTION)]),
    "RefreshConnectionFunction": ([item("UpdateItem", CONNECTION), kms("Decrypt", "tokens")], [kms("Decrypt", "flow")]),
    "RefreshWorkerFunction": (
        [item("GetItem", CONNECTION), kms("Decrypt", "client_secret"), EVENTS],
        [Request("dynamodb:Query", DUE_INDEX), item("UpdateItem", ACTIVITY)],
    ),
    "RefreshSchedulerFunction": (
        [
            Request("dynamodb:Query", DUE_INDEX, {"dynamodb:leadingkeys": ("CONNECTION#3",)}),
            Request("sqs:SendMessage", REFRESH_QUEUE),
        ],
        [Request("dynamodb:Query", TABLE), Request("sqs:SendMessage", FEED_QUEUE), item("GetItem", CONNECTION)],
    ),
    "ListFeedsFunction": ([item("Query", CONNECTION)], [item("PutItem", CONNECTION)]),
    "GetFeedFunction": ([item("GetItem", CONNECTION)], [item("Query", CONNECTION)]),
    "CreateFeedFunction": (
        [item("PutItem", CONNECTION), item("GetItem", CONNECTION)],
        [item("DeleteItem", CONNECTION)],
    ),
    "UpdateFeedFunction": ([item("PutItem", CONNECTION), item("PutItem", ACTIVITY)], [item("GetItem", ACTIVITY)]),
    "DeleteFeedFunction": ([item("DeleteItem", CONNECTION)], [item("DeleteItem", ACTIVITY)]),
    "RunFeedFunction": (
        [item("GetItem", CONNECTION), Request("sqs:SendMessage", FEED_QUEUE)],
        [Request("sqs:SendMessage", REFRESH_QUEUE), item("PutItem", CONNECTION)],
    ),
    "ListFeedRunsFunction": ([item("Query", CONNECTION), item("GetItem", CONNECTION)], [item("PutItem", CONNECTION)]),
    "ListFeedActivityFunction": ([item("Query", ACTIVITY)], [item("Query", CONNECTION)]),
    "FeedDispatcherFunction": (
        [Request("dynamodb:Query", DUE_INDEX), item("UpdateItem", CONNECTION), Request("sqs:SendMessage", FEED_QUEUE)],
        [item("UpdateItem", ACTIVITY), Request("sqs:SendMessage", REFRESH_QUEUE)],
    ),
    "FeedFetchFunction": (
        [
            Request("s3:PutObject", BUCKET + "/feeds/acme/f1.json"),
            Request("s3:AbortMultipartUpload", BUCKET + "/feeds/acme/f1.json"),
            Request("lambda:InvokeFunction", GET_TOKEN),
            item("UpdateItem", CONNECTION),
            EVENTS,
        ],
        [
            Request("s3:PutObject", BUCKET + "/other/f1.json"),
            Request("s3:GetObject", BUCKET + "/feeds/acme/f1.json"),
            kms("Decrypt", "tokens"),
        ],
    ),
}


def test_every_function_of_the_template_has_samples() -> None:
    assert set(SAMPLES) == set(policies())


@pytest.mark.parametrize("function", sorted(SAMPLES))
def test_each_function_is_allowed_its_work_and_refused_the_rest(function: str) -> None:
    allowed, denied = SAMPLES[function]
    statements = policies()[function]
    assert [request for request in allowed if not is_allowed(statements, request)] == []
    assert [request for request in denied if is_allowed(statements, request)] == []


def test_a_transaction_mixing_activity_and_connection_items_needs_both_statements() -> None:
    statements = policies()["CreateConnectionFunction"]
    mixed = Request("dynamodb:PutItem", TABLE, {"dynamodb:leadingkeys": (CONNECTION, ACTIVITY)})
    assert not is_allowed(statements, mixed)
    assert not is_allowed(policies()["GetConnectionFunction"], Request("dynamodb:GetItem", TABLE + "x"))


@pytest.mark.parametrize(
    ("operator", "expected", "actual", "holds"),
    [
        ("StringEquals", ("tokens", "flow"), ("flow",), True),
        ("StringEquals", ("tokens",), ("Tokens",), False),
        ("StringEquals", ("tokens",), None, False),
        ("StringNotEquals", ("tokens",), None, True),
        ("StringLike", ("ACTIVITY#?cme",), ("ACTIVITY#acme",), True),
        ("ForAllValues:StringLike", ("ACTIVITY#*",), ("ACTIVITY#a", "ACTIVITY#b"), True),
        ("ForAllValues:StringLike", ("ACTIVITY#*",), ("ACTIVITY#a", "TENANT#a"), False),
        ("ForAllValues:StringLike", ("ACTIVITY#*",), (), True),
        ("ForAllValues:StringNotLike", ("ACTIVITY#*",), ("TENANT#a",), True),
        ("ForAllValues:StringNotLike", ("ACTIVITY#*",), ("TENANT#a", "ACTIVITY#a"), False),
        ("ForAnyValue:StringLike", ("ACTIVITY#*",), (), False),
        ("Bool", ("true",), ("True",), True),
    ],
)
def test_condition_operators(operator: str, expected: tuple[str, ...], actual: Any, holds: bool) -> None:
    assert condition_holds(operator, expected, actual) is holds


def test_an_operator_the_emulation_does_not_know_is_refused_loudly() -> None:
    with pytest.raises(ValueError, match="NumericLessThan"):
        condition_holds("NumericLessThan", ("1",), ("0",))
    # Already when the stack reads the policy: the function then stays unrestricted, with a warning.
    with pytest.raises(ValueError, match="NumericLessThan"):
        Statement.parse({"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"NumericLessThan": {}}})
    with pytest.raises(ValueError, match="NotAction"):
        Statement.parse({"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"})


def test_an_explicit_deny_wins() -> None:
    allow = Statement("Allow", ("dynamodb:*",), ("*",))
    deny = Statement("Deny", ("dynamodb:DeleteItem",), (TABLE,))
    assert is_allowed([allow, deny], item("GetItem", CONNECTION))
    assert not is_allowed([allow, deny], item("DeleteItem", CONNECTION))


RESOURCES = Resources(
    tables={"connections": {"arn": TABLE, "partition_key": "pk", "indexes": {"DueIndex": "due_shard"}}},
    keys={"alias/connections": KEY},
    default_key=KEY,
)


def test_dynamodb_requests_name_the_partition_keys_they_touch() -> None:
    get = dynamodb_requests("GetItem", {"TableName": "connections", "Key": {"pk": {"S": CONNECTION}}}, RESOURCES)
    assert get == [item("GetItem", CONNECTION)]
    query = {
        "TableName": "connections",
        "KeyConditionExpression": "#0 = :0 AND begins_with (#1, :1)",
        "ExpressionAttributeNames": {"#0": "pk", "#1": "sk"},
        "ExpressionAttributeValues": {":0": {"S": ACTIVITY}, ":1": {"S": "x"}},
    }
    assert dynamodb_requests("Query", query, RESOURCES) == [item("Query", ACTIVITY)]
    due = {
        "TableName": "connections",
        "IndexName": "DueIndex",
        "KeyConditionExpression": "#0 = :0",
        "ExpressionAttributeNames": {"#0": "due_shard"},
        "ExpressionAttributeValues": {":0": {"S": "CONNECTION#3"}},
    }
    assert dynamodb_requests("Query", due, RESOURCES) == [
        Request("dynamodb:Query", DUE_INDEX, {"dynamodb:leadingkeys": ("CONNECTION#3",)})
    ]


def test_a_transaction_needs_the_permission_of_each_part() -> None:
    body = {
        "TransactItems": [
            {"Put": {"TableName": "connections", "Item": {"pk": {"S": CONNECTION}, "sk": {"S": "C#1"}}}},
            {"Delete": {"TableName": "connections", "Key": {"pk": {"S": CONNECTION}, "sk": {"S": "N#1"}}}},
            {"ConditionCheck": {"TableName": "connections", "Key": {"pk": {"S": ACTIVITY}}}},
        ]
    }
    assert dynamodb_requests("TransactWriteItems", body, RESOURCES) == [
        item("PutItem", CONNECTION),
        item("DeleteItem", CONNECTION),
        item("ConditionCheckItem", ACTIVITY),
    ]
    batch = {
        "RequestItems": {
            "connections": [
                {"PutRequest": {"Item": {"pk": {"S": ACTIVITY}}}},
                {"DeleteRequest": {"Key": {"pk": {"S": CONNECTION}}}},
            ]
        }
    }
    assert dynamodb_requests("BatchWriteItem", batch, RESOURCES) == [
        Request("dynamodb:BatchWriteItem", TABLE, {"dynamodb:leadingkeys": (ACTIVITY, CONNECTION)})
    ]


def test_kms_requests_carry_the_encryption_context_and_the_key() -> None:
    generate = kms_requests(
        "GenerateDataKey", {"KeyId": "alias/connections", "EncryptionContext": {"purpose": "connection"}}, RESOURCES
    )
    assert generate == [
        Request(
            "kms:GenerateDataKey",
            KEY,
            {"kms:encryptioncontext:purpose": ("connection",), "kms:encryptioncontextkeys": ("purpose",)},
        )
    ]
    # A symmetric ciphertext names its key: a Decrypt without KeyId is one of the stack's key.
    assert kms_requests("Decrypt", {"CiphertextBlob": "AAAA"}, RESOURCES)[0].resource == KEY


def test_sqs_events_and_s3_requests() -> None:
    url = "http://127.0.0.1:1/123456789012/feed-queue"
    assert sqs_requests("SendMessageBatch", {"QueueUrl": url}) == [Request("sqs:SendMessage", FEED_QUEUE)]
    entries = {"Entries": [{"EventBusName": "default"}, {}, {"EventBusName": "other"}]}
    assert [request.resource for request in events_requests("PutEvents", entries)] == [
        BUS,
        BUS[: -len("default")] + "other",
    ]
    object_path = "/feeds-bucket/feeds/acme/f1.json"
    assert s3_requests("PUT", object_path, {"partNumber": ["1"], "uploadId": ["u"]}) == [
        Request("s3:PutObject", BUCKET + "/feeds/acme/f1.json")
    ]
    assert s3_requests("POST", object_path, {"uploads": [""]})[0].action == "s3:PutObject"
    assert s3_requests("DELETE", object_path, {"uploadId": ["u"]})[0].action == "s3:AbortMultipartUpload"
    assert s3_requests("GET", object_path, {"versionId": ["v"]})[0].action == "s3:GetObjectVersion"
    assert s3_requests("GET", object_path, {})[0].action == "s3:GetObject"


def test_the_access_key_comes_from_the_signature() -> None:
    header = "AWS4-HMAC-SHA256 Credential=LOCALFNGetTokenFunction/20260101/eu-central-1/kms/aws4_request, Sig=x"
    assert credential_of({"HTTP_AUTHORIZATION": header}) == ("LOCALFNGetTokenFunction", "kms")
    presigned = "X-Amz-Credential=LOCALFNFeedFetchFunction%2F20260101%2Feu-central-1%2Fs3%2Faws4_request"
    assert credential_of({"QUERY_STRING": presigned}) == ("LOCALFNFeedFetchFunction", "s3")
    assert credential_of({}) is None


def test_the_lambda_endpoint_lets_a_function_invoke_only_what_its_policy_allows() -> None:
    def caller(logical_id: str) -> FunctionPolicy:
        return FunctionPolicy(logical_id, f"local-{logical_id}", f"{logical_id}Role", tuple(policies()[logical_id]))

    book = {access_key_for(name): caller(name) for name in ("FeedFetchFunction", "RunFeedFunction")}

    def signed(logical_id: str) -> str:
        return f"AWS4-HMAC-SHA256 Credential={access_key_for(logical_id)}/20260101/eu-central-1/lambda/aws4_request"

    assert invocation_refusal(book, signed("FeedFetchFunction"), GET_TOKEN) is None
    refusal = invocation_refusal(book, signed("RunFeedFunction"), GET_TOKEN)
    assert refusal is not None
    assert refusal.startswith("IAM denied RunFeedFunction: User: arn:aws:sts::123456789012:assumed-role/")
    assert f"is not authorized to perform: lambda:InvokeFunction on resource: {GET_TOKEN} " in refusal
    unsigned = "AWS4-HMAC-SHA256 Credential=testing/20260101/eu-central-1/lambda/aws4_request"
    assert invocation_refusal(book, unsigned, GET_TOKEN) is None


@pytest.fixture(scope="module")
def enforced_aws() -> Iterator[tuple[str, IamEnforcement]]:
    """moto behind the middleware, as in the local stack, on a free port."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    application = embedded_aws_application()
    server = make_server("127.0.0.1", 0, application, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", application
    server.shutdown()
    thread.join()


def client(url: str, service: str, access_key: str) -> Any:
    return boto3.session.Session().client(
        service,  # type: ignore[call-overload]
        endpoint_url=url,
        region_name=config.REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=config.FAKE_SECRET_KEY,
    )


def test_refusals_are_answered_as_aws_answers_them(enforced_aws: tuple[str, IamEnforcement]) -> None:
    url, application = enforced_aws
    name = f"t-{uuid.uuid4().hex[:8]}"
    admin = {service: client(url, service, config.FAKE_ACCESS_KEY) for service in ("dynamodb", "kms", "sqs", "s3")}
    admin["dynamodb"].create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    table_arn = admin["dynamodb"].describe_table(TableName=name)["Table"]["TableArn"]
    key_arn = admin["kms"].create_key()["KeyMetadata"]["Arn"]
    queue_url = admin["sqs"].create_queue(QueueName=name)["QueueUrl"]
    admin["s3"].create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": config.REGION})
    reader = Statement(
        "Allow",
        ("dynamodb:GetItem",),
        (table_arn,),
        {"ForAllValues:StringLike": {"dynamodb:leadingkeys": ("TENANT#*",)}},
    )
    application.configure(
        {
            "functions": {
                access_key_for("Reader"): {
                    "function": "Reader",
                    "name": "local-Reader",
                    "role": "ReaderRole",
                    "statements": [
                        reader.to_json(),
                        Statement("Allow", ("s3:PutObject",), (f"arn:aws:s3:::{name}/feeds/*",)).to_json(),
                    ],
                }
            },
            "tables": {name: {"arn": table_arn, "partition_key": "pk", "indexes": {}}},
            "keys": {},
            "default_key": key_arn,
        }
    )
    function = {service: client(url, service, access_key_for("Reader")) for service in ("dynamodb", "kms", "sqs", "s3")}

    assert "Item" not in function["dynamodb"].get_item(TableName=name, Key={"pk": {"S": "TENANT#a"}})
    refusals: list[tuple[Callable[[], Any], str, str]] = [
        (
            lambda: function["dynamodb"].get_item(TableName=name, Key={"pk": {"S": "ACTIVITY#a"}}),
            "AccessDeniedException",
            "dynamodb:GetItem",
        ),
        (
            lambda: function["dynamodb"].put_item(TableName=name, Item={"pk": {"S": "TENANT#a"}}),
            "AccessDeniedException",
            "dynamodb:PutItem",
        ),
        (
            lambda: function["kms"].generate_data_key(KeyId=key_arn, KeySpec="AES_256"),
            "AccessDeniedException",
            "kms:GenerateDataKey",
        ),
        (lambda: function["sqs"].send_message(QueueUrl=queue_url, MessageBody="x"), "AccessDenied", "sqs:SendMessage"),
        (lambda: function["s3"].put_object(Bucket=name, Key="other/x", Body=b"x"), "AccessDenied", "s3:PutObject"),
    ]
    for call, code, action in refusals:
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == code
        assert f"assumed-role/ReaderRole/local-Reader is not authorized to perform: {action} " in str(refused.value)
    function["s3"].put_object(Bucket=name, Key="feeds/x", Body=b"x")
    # Other keys are not restricted.
    admin["dynamodb"].put_item(TableName=name, Item={"pk": {"S": "ACTIVITY#a"}})
    admin["sqs"].send_message(QueueUrl=queue_url, MessageBody="x")


def test_an_object_of_a_kms_encrypted_bucket_needs_the_key_through_s3() -> None:
    resources = Resources(buckets={"feeds-bucket": {"key": KEY, "bucket_key": True}})
    statements = policies()["FeedFetchFunction"]
    path = "/feeds-bucket/feeds/acme/f1/latest.json"
    via_s3 = {
        "kms:viaservice": (f"s3.{config.REGION}.amazonaws.com",),
        "kms:encryptioncontext:aws:s3:arn": (BUCKET,),
        "kms:encryptioncontextkeys": ("aws:s3:arn",),
    }
    assert s3_requests("PUT", path, {}, resources) == [
        Request("s3:PutObject", BUCKET + "/feeds/acme/f1/latest.json"),
        Request("kms:GenerateDataKey", KEY, via_s3),
    ]
    create = s3_requests("POST", path, {"uploads": [""]}, resources)
    assert [request.action for request in create] == ["s3:PutObject", "kms:GenerateDataKey", "kms:Decrypt"]
    part = s3_requests("PUT", path, {"uploadId": ["u"], "partNumber": ["1"]}, resources)
    assert [request.action for request in part] == ["s3:PutObject", "kms:Decrypt"]
    assert [request.action for request in s3_requests("DELETE", path, {"uploadId": ["u"]}, resources)] == [
        "s3:AbortMultipartUpload"
    ]
    assert all(is_allowed(statements, request) for request in [*create, *part])
    # The same key permission outside S3, or for another bucket's objects, is refused.
    assert not is_allowed(statements, Request("kms:GenerateDataKey", KEY, {**via_s3, "kms:viaservice": ("x",)}))
    other = {**via_s3, "kms:encryptioncontext:aws:s3:arn": ("arn:aws:s3:::other",)}
    assert not is_allowed(statements, Request("kms:Decrypt", KEY, other))
