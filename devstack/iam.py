"""IAM of the local stack: each function may do on the embedded AWS only what its template policy allows.

Without it a permission missing from template.yaml passes every local test and fails in production.
Each function's workers sign with an access key id that names the function (:func:`access_key_for`);
:class:`IamEnforcement`, a WSGI middleware in front of moto, maps the key of a request to the function's
policy statements, derives the IAM action, resource and condition keys of the request and answers a
request no statement allows as AWS does. Requests signed with any other key (tests, provisioning, the
benchmarks) are not restricted.

The stack resolves the policies from the template (:func:`policy_document`) and hands them to the
embedded AWS at :data:`CONTROL_PATH` once its resources exist. Evaluated: Allow and Deny statements
with Action/Resource wildcards and the condition operators StringEquals, StringNotEquals, StringLike,
StringNotLike and Bool, each optionally under ForAllValues/ForAnyValue.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from devstack import config

if TYPE_CHECKING:
    from devstack.aws import Provisioner
    from devstack.runtime import FunctionSpec

CONTROL_PATH = "/_devstack/iam"
DENIAL_PREFIX = "IAM denied"
_ACCESS_KEY_PREFIX = "LOCALFN"
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]*/[^/]*/([^/,\s]+)/")
_KEY_CONDITION_EQUALS = re.compile(r"(#?[\w.\-]+)\s*=\s*(:[\w\-]+)")


def access_key_for(logical_id: str) -> str:
    """The access key id a function's workers sign with: it names the function, as a role session would."""
    return f"{_ACCESS_KEY_PREFIX}{logical_id}"


# ---------------------------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class Statement:
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Statement:
        unsupported = {"NotAction", "NotResource", "NotPrincipal"} & set(raw)
        if unsupported:
            raise ValueError(f"statement keys not emulated: {sorted(unsupported)}")
        for operator in raw.get("Condition") or {}:
            _operator(operator)
        conditions = {
            operator: {key.lower(): _strings(values) for key, values in (keys or {}).items()}
            for operator, keys in (raw.get("Condition") or {}).items()
        }
        return cls(str(raw.get("Effect")), _strings(raw.get("Action")), _strings(raw.get("Resource")), conditions)

    def to_json(self) -> dict[str, Any]:
        return {
            "Effect": self.effect,
            "Action": list(self.actions),
            "Resource": list(self.resources),
            "Condition": {
                operator: {k: list(v) for k, v in keys.items()} for operator, keys in self.conditions.items()
            },
        }


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    return tuple(("true" if item else "false") if isinstance(item, bool) else str(item) for item in items)


def function_statements(
    template: Mapping[str, Any], properties: Mapping[str, Any], resolve: Callable[[Any], Any]
) -> list[Statement]:
    """A function's policy statements: inline ``Statement`` documents and managed policies of the template
    it references (``!Ref SomeManagedPolicy``). A SAM policy template or an outside policy ARN raises."""
    resources: Mapping[str, Any] = template.get("Resources") or {}
    policies = properties.get("Policies") or []
    statements: list[Statement] = []
    for policy in policies if isinstance(policies, list) else [policies]:
        document: Any = policy
        if isinstance(policy, dict) and set(policy) == {"Ref"}:
            referenced = resources.get(str(policy["Ref"])) or {}
            if referenced.get("Type") != "AWS::IAM::ManagedPolicy":
                raise ValueError(f"policy {policy['Ref']} is not a managed policy of the template")
            document = (referenced.get("Properties") or {}).get("PolicyDocument") or {}
        if not isinstance(document, dict) or "Statement" not in document:
            raise ValueError(f"policy not emulated: {policy!r}")
        raw_statements = resolve(document["Statement"])
        for raw in raw_statements if isinstance(raw_statements, list) else [raw_statements]:
            statements.append(Statement.parse(raw))
    return statements


def policy_document(
    template: Mapping[str, Any],
    provisioner: Provisioner,
    functions: Mapping[str, FunctionSpec],
    warnings: list[str],
) -> dict[str, Any]:
    """What :class:`IamEnforcement` needs, as JSON: each function's resolved statements by its access key,
    the tables' partition keys and the names of the keys. A function whose policies cannot be emulated
    stays unrestricted, with a warning."""
    from devstack.template import function_properties

    resources: Mapping[str, Any] = template.get("Resources") or {}
    document: dict[str, Any] = {"functions": {}, "tables": {}, "keys": {}, "default_key": None}
    for logical_id, spec in functions.items():
        properties = function_properties(template, resources[logical_id])
        try:
            statements = function_statements(template, properties, provisioner.resolver.resolve)
        except ValueError as error:
            warnings.append(f"{logical_id}: IAM not emulated, unrestricted on the embedded AWS: {error}")
            continue
        document["functions"][access_key_for(logical_id)] = {
            "function": logical_id,
            "name": spec.name,
            "role": str(provisioner.attribute(f"{logical_id}Role", None)),
            "statements": [statement.to_json() for statement in statements],
        }
    key_arns: list[str] = []
    for logical_id, attributes in provisioner.attributes.items():
        resource = resources.get(logical_id) or {}
        properties = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::DynamoDB::Table":
            indexes = [
                *(properties.get("GlobalSecondaryIndexes") or []),
                *(properties.get("LocalSecondaryIndexes") or []),
            ]
            document["tables"][str(attributes["Ref"])] = {
                "arn": attributes["Arn"],
                "partition_key": _hash_key(properties.get("KeySchema")),
                "indexes": {str(index["IndexName"]): _hash_key(index.get("KeySchema")) for index in indexes},
            }
        elif resource.get("Type") == "AWS::KMS::Key":
            key_arns.append(str(attributes["Arn"]))
            document["keys"].update(
                {str(attributes["KeyId"]): attributes["Arn"], str(attributes["Arn"]): attributes["Arn"]}
            )
    for logical_id, attributes in provisioner.attributes.items():
        resource = resources.get(logical_id) or {}
        if resource.get("Type") == "AWS::KMS::Alias":
            target = str(provisioner.resolver.resolve((resource.get("Properties") or {}).get("TargetKeyId")))
            arn = document["keys"].get(target, target)
            alias = str(attributes["Ref"])
            document["keys"].update({alias: arn, _arn("kms", alias): arn})
    document["default_key"] = key_arns[0] if len(key_arns) == 1 else None
    document["buckets"] = {}
    for logical_id, attributes in provisioner.attributes.items():
        resource = resources.get(logical_id) or {}
        if resource.get("Type") != "AWS::S3::Bucket":
            continue
        encryption = ((resource.get("Properties") or {}).get("BucketEncryption") or {}).get(
            "ServerSideEncryptionConfiguration"
        ) or []
        for rule in encryption:
            default = rule.get("ServerSideEncryptionByDefault") or {}
            if default.get("SSEAlgorithm") in ("aws:kms", "aws:kms:dsse"):
                key = str(provisioner.resolver.resolve(default.get("KMSMasterKeyID") or ""))
                document["buckets"][str(attributes["Ref"])] = {
                    "key": document["keys"].get(key, key),
                    "bucket_key": bool(provisioner.resolver.resolve(rule.get("BucketKeyEnabled", False))),
                }
    return document


def enforce_policies(aws_url: str, document: Mapping[str, Any]) -> None:
    """Hand the policies to the embedded AWS, which enforces them from then on."""
    url = aws_url + CONTROL_PATH
    request = urllib.request.Request(url, data=json.dumps(document).encode(), method="POST")  # noqa: S310 (loopback)
    with urllib.request.urlopen(request, timeout=30):  # noqa: S310 (the embedded AWS on loopback)
        pass


def _hash_key(schema: Any) -> str | None:
    return next((str(key["AttributeName"]) for key in schema or [] if key.get("KeyType") == "HASH"), None)


# ---------------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Request:
    """One permission a request needs: an action on a resource, with its condition keys (lower case)."""

    action: str
    resource: str
    context: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _matches(pattern: str, value: str, *, wildcards: bool, case: bool = True) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    if not wildcards:
        return pattern == value
    return fnmatchcase(value, pattern.replace("[", "[[]"))


_OPERATORS: Mapping[str, tuple[bool, bool, bool]] = {
    # operator: (wildcards, negated, case-sensitive)
    "StringEquals": (False, False, True),
    "StringNotEquals": (False, True, True),
    "StringLike": (True, False, True),
    "StringNotLike": (True, True, True),
    "StringEqualsIgnoreCase": (False, False, False),
    "Bool": (False, False, False),
}


def _operator(operator: str) -> tuple[str, str, bool]:
    """An operator's set qualifier, base operator and IfExists; ValueError for one not emulated."""
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    if base not in _OPERATORS or qualifier not in ("", "ForAllValues", "ForAnyValue"):
        raise ValueError(f"condition operator not emulated: {operator}")
    return qualifier, base, if_exists


def condition_holds(operator: str, expected: tuple[str, ...], actual: tuple[str, ...] | None) -> bool:
    """One condition key as IAM evaluates it. A set operator over an absent or empty key: ForAllValues
    holds, ForAnyValue does not. A plain operator over an absent key holds only when negated."""
    qualifier, base, if_exists = _operator(operator)
    if if_exists and actual is None:
        return True
    wildcards, negated, case = _OPERATORS[base]

    def one(value: str) -> bool:
        hit = any(_matches(pattern, value, wildcards=wildcards, case=case) for pattern in expected)
        return not hit if negated else hit

    values = actual or ()
    if qualifier == "ForAllValues":
        return all(one(value) for value in values)
    if qualifier == "ForAnyValue":
        return any(one(value) for value in values)
    if not values:
        return negated
    return all(one(value) for value in values) if negated else any(one(value) for value in values)


def _statement_applies(statement: Statement, request: Request) -> bool:
    if not any(_matches(pattern, request.action, wildcards=True, case=False) for pattern in statement.actions):
        return False
    if not any(_matches(pattern, request.resource, wildcards=True) for pattern in statement.resources):
        return False
    return all(
        condition_holds(operator, expected, request.context.get(key))
        for operator, keys in statement.conditions.items()
        for key, expected in keys.items()
    )


def is_allowed(statements: Iterable[Statement], request: Request) -> bool:
    """An explicit Deny wins; otherwise some Allow must apply (no statement: implicit deny)."""
    applying = [statement for statement in statements if _statement_applies(statement, request)]
    return any(s.effect == "Allow" for s in applying) and not any(s.effect == "Deny" for s in applying)


# ---------------------------------------------------------------------------------------------- requests


@dataclass
class Resources:
    """What the embedded AWS needs to name resources as IAM does: tables with their partition keys, keys."""

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {arn, partition_key, indexes}
    keys: dict[str, str] = field(default_factory=dict)  # key id, key ARN, alias name or alias ARN -> key ARN
    default_key: str | None = None  # the stack's one key: a Decrypt without KeyId names the ciphertext's key
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)  # SSE-KMS buckets: name -> {key, bucket_key}

    def table_arn(self, name: str) -> str:
        if name.startswith("arn:"):
            return name
        known = self.tables.get(name)
        return str(known["arn"]) if known else _arn("dynamodb", f"table/{name}")

    def partition_key(self, table: str, index: str | None = None) -> str | None:
        known = self.tables.get(table.rsplit("/", 1)[-1]) or {}
        if index:
            return (known.get("indexes") or {}).get(index)
        return known.get("partition_key")

    def key_arn(self, key_id: str | None) -> str:
        if not key_id:
            return self.default_key or "*"
        if key_id in self.keys:
            return self.keys[key_id]
        return key_id if key_id.startswith("arn:") else _arn("kms", f"key/{key_id}")


def _arn(service: str, resource: str) -> str:
    return f"arn:{config.PARTITION}:{service}:{config.REGION}:{config.ACCOUNT_ID}:{resource}"


def _attribute_string(value: Any) -> str:
    if isinstance(value, dict) and value:
        kind, item = next(iter(value.items()))
        return base64.b64encode(item).decode() if kind == "B" and isinstance(item, bytes) else str(item)
    return str(value)


def _leading_keys(item: Mapping[str, Any] | None, attribute: str | None) -> tuple[str, ...]:
    if not item or not attribute or attribute not in item:
        return ()
    return (_attribute_string(item[attribute]),)


def _query_leading_keys(body: Mapping[str, Any], attribute: str | None) -> tuple[str, ...]:
    if not attribute:
        return ()
    names = body.get("ExpressionAttributeNames") or {}
    values = body.get("ExpressionAttributeValues") or {}
    for name, placeholder in _KEY_CONDITION_EQUALS.findall(str(body.get("KeyConditionExpression") or "")):
        if names.get(name, name) == attribute and placeholder in values:
            return (_attribute_string(values[placeholder]),)
    legacy = (body.get("KeyConditions") or {}).get(attribute) or {}
    return tuple(_attribute_string(value) for value in legacy.get("AttributeValueList") or [])


def dynamodb_requests(operation: str, body: Mapping[str, Any], resources: Resources) -> list[Request]:
    def item_request(action: str, table: str, item: Mapping[str, Any] | None) -> Request:
        keys = _leading_keys(item, resources.partition_key(table))
        return Request(f"dynamodb:{action}", resources.table_arn(table), {"dynamodb:leadingkeys": keys})

    if operation in ("GetItem", "UpdateItem", "DeleteItem"):
        return [item_request(operation, body["TableName"], body.get("Key"))]
    if operation == "PutItem":
        return [item_request(operation, body["TableName"], body.get("Item"))]
    if operation in ("Query", "Scan"):
        table, index = str(body["TableName"]), body.get("IndexName")
        arn = resources.table_arn(table) + (f"/index/{index}" if index else "")
        keys = _query_leading_keys(body, resources.partition_key(table, index)) if operation == "Query" else ()
        return [Request(f"dynamodb:{operation}", arn, {"dynamodb:leadingkeys": keys})]
    if operation in ("TransactWriteItems", "TransactGetItems"):
        # A transaction needs the permission of each of its parts (there is no action of its own).
        kinds = {
            "Put": "PutItem",
            "Update": "UpdateItem",
            "Delete": "DeleteItem",
            "ConditionCheck": "ConditionCheckItem",
        }
        kinds["Get"] = "GetItem"
        requests = []
        for entry in body.get("TransactItems") or []:
            kind, part = next(iter(entry.items()))
            requests.append(item_request(kinds[kind], part["TableName"], part.get("Item") or part.get("Key")))
        return requests
    if operation in ("BatchWriteItem", "BatchGetItem"):
        requests = []
        for table, entries in (body.get("RequestItems") or {}).items():
            attribute = resources.partition_key(table)
            if operation == "BatchGetItem":
                items = list(entries.get("Keys") or [])
            else:
                items = [
                    (entry.get("PutRequest") or {}).get("Item") or (entry.get("DeleteRequest") or {}).get("Key")
                    for entry in entries
                ]
            keys = tuple(sorted({key for item in items for key in _leading_keys(item, attribute)}))
            requests.append(
                Request(f"dynamodb:{operation}", resources.table_arn(table), {"dynamodb:leadingkeys": keys})
            )
        return requests
    named = body.get("TableName")
    return [Request(f"dynamodb:{operation}", resources.table_arn(str(named)) if named else "*")]


def kms_requests(operation: str, body: Mapping[str, Any], resources: Resources) -> list[Request]:
    context = {str(key): str(value) for key, value in (body.get("EncryptionContext") or {}).items()}
    keys: dict[str, tuple[str, ...]] = {
        f"kms:encryptioncontext:{key}".lower(): (value,) for key, value in context.items()
    }
    keys["kms:encryptioncontextkeys"] = tuple(context)
    key_id = body.get("KeyId") or body.get("DestinationKeyId")
    return [Request(f"kms:{operation}", resources.key_arn(str(key_id) if key_id else None), keys)]


_SQS_BATCHES = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


def sqs_requests(operation: str, body: Mapping[str, Any]) -> list[Request]:
    url = str(body.get("QueueUrl") or "")
    name = url.rstrip("/").rsplit("/", 1)[-1] if url else str(body.get("QueueName") or "*")
    return [Request(f"sqs:{_SQS_BATCHES.get(operation, operation)}", _arn("sqs", name))]


def events_requests(operation: str, body: Mapping[str, Any]) -> list[Request]:
    if operation != "PutEvents":
        bus = str(body.get("EventBusName") or "default")
        return [Request(f"events:{operation}", bus if bus.startswith("arn:") else _arn("events", f"event-bus/{bus}"))]
    buses = {str(entry.get("EventBusName") or "default") for entry in body.get("Entries") or []}
    return [
        Request("events:PutEvents", bus if bus.startswith("arn:") else _arn("events", f"event-bus/{bus}"))
        for bus in sorted(buses)
    ]


def s3_requests(method: str, path: str, query: Mapping[str, Any], resources: Resources | None = None) -> list[Request]:
    """S3's REST API by method, path (path-style addressing, as for an endpoint URL) and query, and for
    an object of a bucket encrypted under a KMS key the key permissions S3 uses on the caller's behalf."""
    requests = _s3_object_requests(method, path, query)
    bucket = path.lstrip("/").partition("/")[0]
    encryption = (resources.buckets if resources else {}).get(bucket)
    action = requests[0].action
    if encryption is None or action not in ("s3:PutObject", "s3:GetObject", "s3:GetObjectVersion"):
        return requests
    # With an S3 Bucket Key the encryption context is the bucket's ARN, else the object's.
    context_arn = f"arn:{config.PARTITION}:s3:::{bucket}" if encryption.get("bucket_key") else requests[0].resource
    context = {
        "kms:viaservice": (f"s3.{config.REGION}.{config.URL_SUFFIX}",),
        "kms:encryptioncontext:aws:s3:arn": (context_arn,),
        "kms:encryptioncontextkeys": ("aws:s3:arn",),
    }
    key = str(encryption["key"])
    if action == "s3:PutObject" and not {"uploadId", "partNumber"} & set(query):
        requests.append(Request("kms:GenerateDataKey", key, context))
    if action != "s3:PutObject" or {"uploadId", "partNumber", "uploads"} & set(query):
        # Reading, and every step of a multipart upload, decrypt the object's data key.
        requests.append(Request("kms:Decrypt", key, context))
    return requests


def _s3_object_requests(method: str, path: str, query: Mapping[str, Any]) -> list[Request]:
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket:
        return [Request("s3:ListAllMyBuckets", "*")]
    if not key:
        bucket_actions = {"GET": "ListBucket", "HEAD": "ListBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}
        action = "ListBucketVersions" if "versions" in query else bucket_actions.get(method, f"{method}Bucket")
        if method == "POST" and "delete" in query:
            return [Request("s3:DeleteObject", f"arn:{config.PARTITION}:s3:::{bucket}/*")]
        return [Request(f"s3:{action}", f"arn:{config.PARTITION}:s3:::{bucket}")]
    resource = f"arn:{config.PARTITION}:s3:::{bucket}/{key}"
    versioned = "versionId" in query
    if method in ("GET", "HEAD"):
        if "uploadId" in query:
            action = "ListMultipartUploadParts"
        elif "tagging" in query:
            action = "GetObjectVersionTagging" if versioned else "GetObjectTagging"
        else:
            action = "GetObjectVersion" if versioned else "GetObject"
    elif method == "DELETE":
        action = (
            "AbortMultipartUpload" if "uploadId" in query else "DeleteObjectVersion" if versioned else "DeleteObject"
        )
    elif method in ("PUT", "POST"):
        # PutObject covers CopyObject's target, UploadPart, CreateMultipartUpload and CompleteMultipartUpload.
        action = "PutObjectTagging" if "tagging" in query else "PutObjectAcl" if "acl" in query else "PutObject"
    else:
        action = f"{method}Object"
    return [Request(f"s3:{action}", resource)]


def credential_of(environ: Mapping[str, Any]) -> tuple[str, str] | None:
    """The access key id and service of a SigV4-signed request (header or presigned query)."""
    authorization = str(environ.get("HTTP_AUTHORIZATION") or "")
    if not authorization:
        credential = parse_qs(str(environ.get("QUERY_STRING") or "")).get("X-Amz-Credential", [""])[0]
        authorization = f"Credential={unquote(credential)}"
    match = _CREDENTIAL.search(authorization)
    return (match.group(1), match.group(2)) if match else None


# ---------------------------------------------------------------------------------------------- middleware


@dataclass(frozen=True)
class FunctionPolicy:
    logical_id: str
    name: str
    role: str
    statements: tuple[Statement, ...]


def function_policies(document: Mapping[str, Any]) -> dict[str, FunctionPolicy]:
    """The functions' policies of a :func:`policy_document`, by access key id."""
    return {
        key: FunctionPolicy(
            str(entry["function"]),
            str(entry["name"]),
            str(entry["role"]),
            tuple(Statement.parse(raw) for raw in entry["statements"]),
        )
        for key, entry in (document.get("functions") or {}).items()
    }


def invocation_refusal(policies: Mapping[str, FunctionPolicy], authorization: str, function_arn: str) -> str | None:
    """For the local Lambda endpoint: why a function may not invoke ``function_arn`` (None: it may, or
    the caller is no function of the stack)."""
    credential = credential_of({"HTTP_AUTHORIZATION": authorization})
    caller = policies.get(credential[0]) if credential else None
    request = Request("lambda:InvokeFunction", function_arn)
    if caller is None or is_allowed(caller.statements, request):
        return None
    message = denial_message(caller, request)
    return f"{DENIAL_PREFIX} {caller.logical_id}: {message}"


class IamEnforcement:
    """WSGI middleware: a function's request that its policy does not allow is refused as AWS refuses it.

    Passes everything through until the stack posts the policies to :data:`CONTROL_PATH`.
    """

    def __init__(self, application: Callable[..., Iterable[bytes]]) -> None:
        self._application = application
        self._functions: dict[str, FunctionPolicy] = {}
        self._resources = Resources()
        self._lock = threading.Lock()

    def configure(self, document: Mapping[str, Any]) -> None:
        functions = function_policies(document)
        resources = Resources(
            tables=dict(document.get("tables") or {}),
            keys=dict(document.get("keys") or {}),
            default_key=document.get("default_key"),
            buckets=dict(document.get("buckets") or {}),
        )
        with self._lock:
            self._functions, self._resources = functions, resources

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == CONTROL_PATH and environ.get("REQUEST_METHOD") == "POST":
            self.configure(json.loads(_read_body(environ) or b"{}"))
            start_response("204 No Content", [])
            return [b""]
        credential = credential_of(environ)
        function = self._functions.get(credential[0]) if credential else None
        if function is None or credential is None:
            return self._application(environ, start_response)
        service = credential[1]
        try:
            protocol, requests = self._requests_of(service, environ)
        except (KeyError, TypeError, ValueError, StopIteration, AttributeError):
            # A malformed request: moto answers it as AWS would (a validation error), nothing to authorize.
            return self._application(environ, start_response)
        for request in requests:
            if not is_allowed(function.statements, request):
                return _denied(protocol, service, function, request, environ, start_response)
        return self._application(environ, start_response)

    def _requests_of(self, service: str, environ: dict[str, Any]) -> tuple[str, list[Request]]:
        target = str(environ.get("HTTP_X_AMZ_TARGET") or "")
        if service == "s3":
            query = parse_qs(str(environ.get("QUERY_STRING") or ""), keep_blank_values=True)
            method, path = str(environ.get("REQUEST_METHOD")), str(environ.get("PATH_INFO"))
            return "rest-xml", s3_requests(method, path, query, self._resources)
        if target:
            operation = target.rpartition(".")[2]
            body = json.loads(_read_body(environ) or b"{}")
            if service == "dynamodb":
                return "json", dynamodb_requests(operation, body, self._resources)
            if service == "kms":
                return "json", kms_requests(operation, body, self._resources)
            if service == "sqs":
                return "json", sqs_requests(operation, body)
            if service == "events":
                return "json", events_requests(operation, body)
            return "json", [Request(f"{service}:{operation}", "*")]
        form = {key: values[0] for key, values in parse_qs(_read_body(environ).decode(errors="replace")).items()}
        operation = form.get("Action", "")
        if service == "sqs":
            return "query", sqs_requests(operation, form)
        return "query", [Request(f"{service}:{operation or 'Unknown'}", "*")]


def _read_body(environ: dict[str, Any]) -> bytes:
    """The request body, put back so that moto reads it again."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return bytes(body)


def denial_message(function: FunctionPolicy, request: Request) -> str:
    principal = f"arn:{config.PARTITION}:sts::{config.ACCOUNT_ID}:assumed-role/{function.role}/{function.name}"
    return (
        f"User: {principal} is not authorized to perform: {request.action} on resource: {request.resource} "
        f"because no identity-based policy allows the {request.action} action"
    )


def _denied(
    protocol: str,
    service: str,
    function: FunctionPolicy,
    request: Request,
    environ: Mapping[str, Any],
    start_response: Callable[..., Any],
) -> Iterable[bytes]:
    message = denial_message(function, request)
    print(
        f"{DENIAL_PREFIX} {function.logical_id}: {message} (context {dict(request.context)})",
        flush=True,
        file=sys.stdout,
    )
    request_id = str(uuid.uuid4())
    if protocol == "json":
        version = "1.0" if service in ("dynamodb", "sqs") else "1.1"
        error_type = "com.amazon.coral.service#AccessDeniedException" if version == "1.0" else "AccessDeniedException"
        body = json.dumps({"__type": error_type, "message": message, "Message": message}).encode()
        headers = [("Content-Type", f"application/x-amz-json-{version}"), ("x-amzn-RequestId", request_id)]
        if service == "sqs":
            headers.append(("x-amzn-query-error", "AccessDenied;Sender"))
        start_response("400 Bad Request", [*headers, ("Content-Length", str(len(body)))])
        return [body]
    if protocol == "query":
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{_xml(message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
    else:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>{_xml(message)}'
            f"</Message><RequestId>{request_id}</RequestId></Error>"
        ).encode()
    if environ.get("REQUEST_METHOD") == "HEAD":
        body = b""
    start_response(
        "403 Forbidden",
        [("Content-Type", "application/xml"), ("x-amz-request-id", request_id), ("Content-Length", str(len(body)))],
    )
    return [body]


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
