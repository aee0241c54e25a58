"""The embedded AWS (moto in server mode, as a subprocess) and provisioning from the template.

Resources are created from the template's own definitions, in dependency order:
DynamoDB tables (keys, indexes, TTL, PITR, SSE, streams), KMS keys and aliases, SQS queues
(with redrive to a DLQ), S3 buckets and EventBridge buses. Resources that need no local
counterpart (functions, layers, APIs, log groups, roles) get CloudFormation-like names and ARNs only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import boto3
import botocore.config

from devstack import config
from devstack.apigw import IMPLICIT_API, api_id_for
from devstack.logs import LogSink
from devstack.template import (
    Resolver,
    TemplateError,
    UnresolvedReference,
    references,
    to_string,
)

MOTO_MAIN = Path(__file__).resolve().parent / "_moto_main.py"
CAPTURE_QUEUE = "devstack-event-capture"
CAPTURE_RULE = "devstack-capture-all"

PROVISIONED_TYPES = frozenset(
    {
        "AWS::DynamoDB::Table",
        "AWS::KMS::Key",
        "AWS::KMS::Alias",
        "AWS::SQS::Queue",
        "AWS::S3::Bucket",
        "AWS::Events::EventBus",
    }
)
# The property that names each resource type (for the physical name).
NAME_PROPERTIES = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::Events::EventBus": "Name",
    "AWS::KMS::Alias": "AliasName",
    "AWS::Serverless::Function": "FunctionName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::Serverless::LayerVersion": "LayerName",
    "AWS::Lambda::LayerVersion": "LayerName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::IAM::Role": "RoleName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::Serverless::StateMachine": "Name",
}
_SQS_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "RedrivePolicy",
    "RedriveAllowPolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
)


def client_config() -> botocore.config.Config:
    return botocore.config.Config(
        region_name=config.REGION,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=64,
        connect_timeout=5,
        read_timeout=60,
    )


def make_client(service: str, endpoint_url: str) -> Any:
    return boto3.session.Session().client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint_url,
        region_name=config.REGION,
        aws_access_key_id=config.FAKE_ACCESS_KEY,
        aws_secret_access_key=config.FAKE_SECRET_KEY,
        config=client_config(),
    )


# ---------------------------------------------------------------------------------------------- moto


class MotoServer:
    """moto's server app in a subprocess on ``port`` (0: a free port)."""

    def __init__(self, port: int, sink: LogSink) -> None:
        """Starts the subprocess; ``wait_ready`` then waits until it listens."""
        self.sink = sink
        self.port = 0
        self.url = ""
        self.process = subprocess.Popen(
            [sys.executable, "-P", str(MOTO_MAIN), config.HOST, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(config.REPO_ROOT)},
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        output: list[str] = []
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if line.startswith("PORT "):
                self.port = int(line.split()[1])
                break
            output.append(line)
        else:
            self.stop()
            details = "\n".join(output[-20:])
            raise RuntimeError(f"the embedded AWS did not start:\n{details}")
        self.url = f"http://{config.HOST}:{self.port}"
        self.sink.pump("aws", self.process.stdout, echo=False)

    def stop(self, grace: float = 3.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()


# ---------------------------------------------------------------------------------------------- provisioning


def _tags(tags: Any) -> list[dict[str, str]]:
    return [{"Key": str(tag["Key"]), "Value": to_string(tag["Value"])} for tag in tags or []]


def _pick(source: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {key: source[key] for key in keys if key in source}


class Provisioner:
    """Creates the template's resources in moto and answers Ref/GetAtt for every resource."""

    def __init__(
        self,
        template: Mapping[str, Any],
        parameters: Mapping[str, Any],
        client: Callable[[str], Any],
        *,
        api_url: str,
        stack_name: str = config.STACK_NAME,
    ) -> None:
        self.template = template
        self.resources: dict[str, dict[str, Any]] = dict(template.get("Resources") or {})
        self.client = client
        self.api_url = api_url
        self.stack_name = stack_name
        self.attributes: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, str] = {}  # logical id -> type, resources without a local counterpart
        self.resolver = Resolver(
            parameters=parameters,
            attribute=self.attribute,
            conditions=template.get("Conditions"),
            mappings=template.get("Mappings"),
            stack_name=stack_name,
        )

    # -- Ref / GetAtt
    def attribute(self, logical_id: str, name: str | None) -> Any:
        attributes = self.attributes.get(logical_id)
        if attributes is None:
            attributes = self._implicit(logical_id)
        key = "Ref" if name is None else name
        if attributes is None or key not in attributes:
            raise UnresolvedReference(logical_id, name)
        return attributes[key]

    def _implicit(self, logical_id: str) -> dict[str, Any] | None:
        """Resources SAM generates: the implicit HTTP API and functions' execution roles."""
        if logical_id == IMPLICIT_API:
            return {"Ref": api_id_for(logical_id), "ApiEndpoint": self.api_url}
        if logical_id.endswith("Role") and logical_id[: -len("Role")] in self.resources:
            return self._synthetic(logical_id, "AWS::IAM::Role", {})
        return None

    def physical_name(self, logical_id: str, resource_type: str, properties: Mapping[str, Any]) -> str:
        explicit = properties.get(NAME_PROPERTIES.get(resource_type, ""))
        if explicit:
            return str(self.resolver.resolve(explicit))
        name = f"{self.stack_name}-{logical_id}"
        if resource_type == "AWS::S3::Bucket":
            name = name.lower()[:63]
        elif resource_type == "AWS::SQS::Queue" and str(properties.get("FifoQueue")).lower() == "true":
            name = name[:75] + ".fifo"
        elif resource_type in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            name = name[:64]
        return name

    def active(self, resource: Mapping[str, Any]) -> bool:
        condition = resource.get("Condition")
        return condition is None or self.resolver.condition(str(condition))

    # -- ordering
    def _dependencies(self, logical_id: str, resource: Mapping[str, Any]) -> set[str]:
        resource_type = str(resource.get("Type"))
        properties = resource.get("Properties") or {}
        if resource_type in PROVISIONED_TYPES:
            scanned: Any = properties
        else:
            scanned = properties.get(NAME_PROPERTIES.get(resource_type, ""))
        depends_on = resource.get("DependsOn") or []
        found = references(scanned) | set([depends_on] if isinstance(depends_on, str) else depends_on)
        return {name for name in found if name in self.resources and name != logical_id}

    def order(self) -> list[str]:
        active = {
            logical_id: resource
            for logical_id, resource in self.resources.items()
            if isinstance(resource, dict) and self.active(resource)
        }
        pending = {
            logical_id: self._dependencies(logical_id, resource) & set(active)
            for logical_id, resource in active.items()
        }
        ordered: list[str] = []
        while pending:
            ready = sorted(logical_id for logical_id, needs in pending.items() if not needs)
            if not ready:
                raise TemplateError(f"circular dependencies between {sorted(pending)}")
            for logical_id in ready:
                ordered.append(logical_id)
                del pending[logical_id]
            for needs in pending.values():
                needs.difference_update(ready)
        return ordered

    # -- creation
    def provision(self) -> None:
        for logical_id in self.order():
            resource = self.resources[logical_id]
            resource_type = str(resource.get("Type"))
            properties = resource.get("Properties") or {}
            if resource_type in PROVISIONED_TYPES:
                resolved = self.resolver.resolve(properties)
                creator = getattr(self, "_create_" + resource_type.split("::", 1)[1].replace("::", "_").lower())
                self.attributes[logical_id] = creator(logical_id, resolved)
            else:
                self.attributes[logical_id] = self._synthetic(logical_id, resource_type, properties)

    def _synthetic(self, logical_id: str, resource_type: str, properties: Mapping[str, Any]) -> dict[str, Any]:
        region, account, partition = config.REGION, config.ACCOUNT_ID, config.PARTITION
        if resource_type not in ("AWS::CloudFormation::WaitConditionHandle",):
            self.skipped[logical_id] = resource_type
        name = self.physical_name(logical_id, resource_type, properties)
        if resource_type in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            return {"Ref": name, "Arn": f"arn:{partition}:lambda:{region}:{account}:function:{name}"}
        if resource_type in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
            arn = f"arn:{partition}:lambda:{region}:{account}:layer:{name}:1"
            return {"Ref": arn, "LayerVersionArn": arn}
        if resource_type in ("AWS::Serverless::HttpApi", "AWS::ApiGatewayV2::Api"):
            return {"Ref": api_id_for(logical_id), "ApiId": api_id_for(logical_id), "ApiEndpoint": self.api_url}
        if resource_type == "AWS::Logs::LogGroup":
            return {"Ref": name, "Arn": f"arn:{partition}:logs:{region}:{account}:log-group:{name}:*"}
        if resource_type == "AWS::IAM::Role":
            return {"Ref": name, "Arn": f"arn:{partition}:iam::{account}:role/{name}", "RoleId": f"AROA{name[:16]}"}
        if resource_type == "AWS::SNS::Topic":
            arn = f"arn:{partition}:sns:{region}:{account}:{name}"
            return {"Ref": arn, "TopicArn": arn, "TopicName": name}
        return {"Ref": name}

    def _create_dynamodb_table(self, logical_id: str, properties: dict[str, Any]) -> dict[str, Any]:
        dynamodb = self.client("dynamodb")
        name = self.physical_name(logical_id, "AWS::DynamoDB::Table", properties)
        billing = properties.get("BillingMode", "PROVISIONED")
        request: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": properties["AttributeDefinitions"],
            "KeySchema": properties["KeySchema"],
            "BillingMode": billing,
        }
        if billing == "PROVISIONED":
            request["ProvisionedThroughput"] = _throughput(properties.get("ProvisionedThroughput"))
        indexes = []
        for index in properties.get("GlobalSecondaryIndexes") or []:
            entry = _pick(index, "IndexName", "KeySchema", "Projection", "OnDemandThroughput")
            if billing == "PROVISIONED":
                entry["ProvisionedThroughput"] = _throughput(index.get("ProvisionedThroughput"))
            indexes.append(entry)
        if indexes:
            request["GlobalSecondaryIndexes"] = indexes
        local_indexes = [
            _pick(index, "IndexName", "KeySchema", "Projection")
            for index in properties.get("LocalSecondaryIndexes") or []
        ]
        if local_indexes:
            request["LocalSecondaryIndexes"] = local_indexes
        if properties.get("StreamSpecification"):
            request["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": properties["StreamSpecification"]["StreamViewType"],
            }
        sse = properties.get("SSESpecification")
        if sse:
            request["SSESpecification"] = {
                "Enabled": bool(sse.get("SSEEnabled")),
                **_pick(sse, "SSEType"),
                **({"KMSMasterKeyId": sse["KMSMasterKeyId"]} if sse.get("KMSMasterKeyId") else {}),
            }
        if properties.get("Tags"):
            request["Tags"] = _tags(properties["Tags"])
        request.update(_pick(properties, "TableClass", "DeletionProtectionEnabled"))
        description = dynamodb.create_table(**request)["TableDescription"]
        ttl = properties.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
        pitr = properties.get("PointInTimeRecoverySpecification")
        if pitr and pitr.get("PointInTimeRecoveryEnabled"):
            dynamodb.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )
        attributes = {"Ref": name, "Arn": description["TableArn"]}
        if description.get("LatestStreamArn"):
            attributes["StreamArn"] = description["LatestStreamArn"]
        return attributes

    def _create_kms_key(self, logical_id: str, properties: dict[str, Any]) -> dict[str, Any]:
        kms = self.client("kms")
        request: dict[str, Any] = _pick(properties, "Description", "KeyUsage", "KeySpec", "MultiRegion", "Origin")
        policy = properties.get("KeyPolicy")
        if policy:
            request["Policy"] = policy if isinstance(policy, str) else json.dumps(policy)
        if properties.get("Tags"):
            request["Tags"] = [{"TagKey": tag["Key"], "TagValue": tag["Value"]} for tag in _tags(properties["Tags"])]
        metadata = kms.create_key(**request)["KeyMetadata"]
        key_id = metadata["KeyId"]
        if properties.get("EnableKeyRotation"):
            kms.enable_key_rotation(KeyId=key_id)
        if properties.get("Enabled") is False:
            kms.disable_key(KeyId=key_id)
        return {"Ref": key_id, "KeyId": key_id, "Arn": metadata["Arn"]}

    def _create_kms_alias(self, logical_id: str, properties: dict[str, Any]) -> dict[str, Any]:
        name = str(properties["AliasName"])
        self.client("kms").create_alias(AliasName=name, TargetKeyId=str(properties["TargetKeyId"]))
        return {"Ref": name}

    def _create_sqs_queue(self, logical_id: str, properties: dict[str, Any]) -> dict[str, Any]:
        name = self.physical_name(logical_id, "AWS::SQS::Queue", properties)
        attributes = {
            key: (json.dumps(value) if isinstance(value, dict) else to_string(value))
            for key, value in properties.items()
            if key in _SQS_ATTRIBUTES
        }
        request: dict[str, Any] = {"QueueName": name, "Attributes": attributes}
        if properties.get("Tags"):
            request["tags"] = {tag["Key"]: tag["Value"] for tag in _tags(properties["Tags"])}
        url = self.client("sqs").create_queue(**request)["QueueUrl"]
        arn = f"arn:{config.PARTITION}:sqs:{config.REGION}:{config.ACCOUNT_ID}:{name}"
        return {"Ref": url, "QueueUrl": url, "Arn": arn, "QueueName": name}

    def _create_s3_bucket(self, logical_id: str, properties: dict[str, Any]) -> dict[str, Any]:
        s3 = self.client("s3")
        name = self.physical_name(logical_id, "AWS::S3::Bucket", properties)
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": config.REGION})
        versioning = properties.get("VersioningConfiguration")
        if versioning:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning["Status"]})
        encryption = properties.get("BucketEncryption")
        if encryption:
            rules = [
                {
                    "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                    **_pick(rule, "BucketKeyEnabled"),
                }
                for rule in encryption.get("ServerSideEncryptionConfiguration") or []
                if "ServerSideEncryptionByDefault" in rule
            ]
            if rules:
                s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        public_access = properties.get("PublicAccessBlockConfiguration")
        if public_access:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=public_access)
        cors = properties.get("CorsConfiguration")
        if cors:
            rules = []
            for rule in cors.get("CorsRules") or []:
                entry = _pick(rule, "AllowedHeaders", "AllowedMethods", "AllowedOrigins", "ID")
                if "ExposedHeaders" in rule:
                    entry["ExposeHeaders"] = rule["ExposedHeaders"]
                if "MaxAge" in rule:
                    entry["MaxAgeSeconds"] = int(rule["MaxAge"])
                rules.append(entry)
            s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": rules})
        if properties.get("Tags"):
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": _tags(properties["Tags"])})
        suffix = config.URL_SUFFIX
        return {
            "Ref": name,
            "Arn": f"arn:{config.PARTITION}:s3:::{name}",
            "DomainName": f"{name}.s3.{suffix}",
            "RegionalDomainName": f"{name}.s3.{config.REGION}.{suffix}",
            "DualStackDomainName": f"{name}.s3.dualstack.{config.REGION}.{suffix}",
            "WebsiteURL": f"http://{name}.s3-website.{config.REGION}.{suffix}",
        }

    def _create_events_eventbus(self, logical_id: str, properties: dict[str, Any]) -> dict[str, Any]:
        name = self.physical_name(logical_id, "AWS::Events::EventBus", properties)
        request: dict[str, Any] = {"Name": name}
        if properties.get("Tags"):
            request["Tags"] = _tags(properties["Tags"])
        arn = self.client("events").create_event_bus(**request)["EventBusArn"]
        return {"Ref": name, "Name": name, "Arn": arn}

    # -- event capture
    def event_buses(self) -> list[str]:
        return ["default"] + [
            str(attributes["Name"])
            for logical_id, attributes in self.attributes.items()
            if self.resources.get(logical_id, {}).get("Type") == "AWS::Events::EventBus"
        ]

    def create_event_capture(self) -> str:
        """A queue receiving every event of every bus (the default one and the template's)."""
        sqs, events = self.client("sqs"), self.client("events")
        name = f"{self.stack_name}-{CAPTURE_QUEUE}"
        url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = f"arn:{config.PARTITION}:sqs:{config.REGION}:{config.ACCOUNT_ID}:{name}"
        for bus in self.event_buses():
            events.put_rule(
                Name=CAPTURE_RULE,
                EventBusName=bus,
                EventPattern=json.dumps({"account": [config.ACCOUNT_ID]}),
                State="ENABLED",
            )
            events.put_targets(Rule=CAPTURE_RULE, EventBusName=bus, Targets=[{"Id": "capture", "Arn": arn}])
        return url


def _throughput(value: Any) -> dict[str, int]:
    value = value or {}
    return {
        "ReadCapacityUnits": int(value.get("ReadCapacityUnits", 5)),
        "WriteCapacityUnits": int(value.get("WriteCapacityUnits", 5)),
    }
