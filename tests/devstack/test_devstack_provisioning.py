"""Provisioning from the template, and the environment the functions get."""

from __future__ import annotations

import json
from typing import Any

from devstack import Stack
from devstack.config import ACCOUNT_ID, DEFAULT_TEMPLATE, REGION, STACK_NAME
from devstack.template import load_template, resources_of_type


def _by_name(items: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return {item[key]: item for item in items}


def test_fixture_table_matches_the_template(fixture_stack: Stack) -> None:
    dynamodb = fixture_stack.boto3_client("dynamodb")
    name = fixture_stack.physical_ids["Table"]
    assert name == f"{STACK_NAME}-Table"
    table = dynamodb.describe_table(TableName=name)["Table"]
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {item["AttributeName"] for item in table["AttributeDefinitions"]} == {"pk", "sk", "gsi1pk"}
    indexes = _by_name(table["GlobalSecondaryIndexes"], "IndexName")
    assert list(indexes) == ["gsi1"]
    assert indexes["gsi1"]["KeySchema"] == [
        {"AttributeName": "gsi1pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert indexes["gsi1"]["Projection"] == {"ProjectionType": "ALL"}
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at_epoch"}
    backups = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    assert fixture_stack.attributes["Table"]["Arn"] == f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"


def test_fixture_key_alias_queues_bucket_and_bus(fixture_stack: Stack) -> None:
    kms = fixture_stack.boto3_client("kms")
    key_id = fixture_stack.physical_ids["Key"]
    alias = fixture_stack.physical_ids["KeyAlias"]
    assert alias == f"alias/{STACK_NAME}-fixture"
    described = kms.describe_key(KeyId=alias)["KeyMetadata"]
    assert described["KeyId"] == key_id
    assert described["Description"] == "Fixture envelope key"
    assert described["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True
    assert json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])["Statement"][0][
        "Principal"
    ] == {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}

    sqs = fixture_stack.boto3_client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=fixture_stack.physical_ids["WorkQueue"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert attributes["VisibilityTimeout"] == "1"
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == fixture_stack.attributes["DeadLetterQueue"]["Arn"]
    assert int(redrive["maxReceiveCount"]) == 2
    assert fixture_stack.attributes["DeadLetterQueue"]["QueueName"] == f"{STACK_NAME}-fixture-dlq"

    s3 = fixture_stack.boto3_client("s3")
    bucket = fixture_stack.physical_ids["Bucket"]
    assert bucket == f"{STACK_NAME}-bucket"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    events = fixture_stack.boto3_client("events")
    bus = events.describe_event_bus(Name=fixture_stack.physical_ids["Bus"])
    assert bus["Arn"] == fixture_stack.attributes["Bus"]["Arn"]


def test_project_template_is_provisioned(stack: Stack) -> None:
    template = load_template(DEFAULT_TEMPLATE)
    dynamodb = stack.boto3_client("dynamodb")
    tables = list(resources_of_type(template, "AWS::DynamoDB::Table"))
    assert tables
    for logical_id, resource in tables:
        properties = resource["Properties"]
        table = dynamodb.describe_table(TableName=stack.physical_ids[logical_id])["Table"]
        assert table["KeySchema"] == properties["KeySchema"]
        assert sorted(table["AttributeDefinitions"], key=lambda item: item["AttributeName"]) == sorted(
            properties["AttributeDefinitions"], key=lambda item: item["AttributeName"]
        )
        expected_indexes = {index["IndexName"] for index in properties.get("GlobalSecondaryIndexes", [])}
        assert {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])} == expected_indexes
        if "TimeToLiveSpecification" in properties:
            ttl = dynamodb.describe_time_to_live(TableName=table["TableName"])["TimeToLiveDescription"]
            assert ttl["AttributeName"] == properties["TimeToLiveSpecification"]["AttributeName"]
    kms = stack.boto3_client("kms")
    for logical_id, resource in resources_of_type(template, "AWS::KMS::Alias"):
        described = kms.describe_key(KeyId=stack.physical_ids[logical_id])["KeyMetadata"]
        target = resource["Properties"]["TargetKeyId"]["Ref"]
        assert described["KeyId"] == stack.physical_ids[target]
    functions = {logical_id for logical_id, _ in resources_of_type(template, "AWS::Serverless::Function")}
    assert set(stack.functions) == functions
    assert stack.issuer == f"{stack.api_url}/local-issuer"
    assert stack.audience == ["oauth-connections-local"]


def test_function_environment_resolves_intrinsics_and_local_overrides(fixture_stack: Stack) -> None:
    result = fixture_stack.invoke("EchoFunction", {"hello": "world"})
    env = result["env"]
    ids, attributes = fixture_stack.physical_ids, fixture_stack.attributes
    assert env["TABLE_NAME"] == ids["Table"]
    assert env["GREETING"] == "hello"
    assert env["OVERRIDDEN"] == "from-function"  # the function's own value wins over Globals
    assert env["KEY_ARN"] == attributes["Key"]["Arn"]
    assert env["KEY_ARN"].endswith(ids["Key"])
    assert env["QUEUE_URL"] == ids["WorkQueue"]
    assert env["QUEUE_NAME"] == f"{STACK_NAME}-WorkQueue"
    assert env["BUCKET_NAME"] == ids["Bucket"]
    assert env["AUDIENCES"] == "oauth-connections-local"
    assert env["SUB_VALUE"] == "|".join(
        [REGION, ACCOUNT_ID, STACK_NAME, "aws", "amazonaws.com", ids["Table"], attributes["Table"]["Arn"], "${Literal}"]
    )
    assert env["AWS_ENDPOINT_URL"] == fixture_stack.aws_url
    assert env["AWS_ENDPOINT_URL_LAMBDA"] == fixture_stack.lambda_url
    assert env["LAMBDA_ENDPOINT_URL"] == fixture_stack.lambda_url
    assert env["PUBLIC_BASE_URL"] == fixture_stack.api_url
    assert env["AWS_REGION"] == REGION
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == f"{STACK_NAME}-EchoFunction"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert env["ALLOW_INSECURE_LOOPBACK_URLS"] == "true"
    assert env["EXTRA_OVERRIDE"] == "from-caller"
    assert result["layer"] == "fixture-layer"
    assert result["cwd"].endswith("functions/echo")
    context = result["context"]
    assert context["function_name"] == f"{STACK_NAME}-EchoFunction"
    assert context["memory_limit_in_mb"] == "256"
    assert context["log_group_name"] == f"/aws/lambda/{STACK_NAME}-EchoFunction"
    assert 0 < context["remaining_ms"] <= 3000
