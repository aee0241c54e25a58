"""The local stack holds each function to its template policy: a function refused a KMS decryption by its
policy gets AWS's AccessDeniedException from the embedded AWS, and the service answers its documented error."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from tests.support.stack_fixtures import ApiClient

# StartAuthorizationFunction opens a service account's client secret (under its connection key, KMS purpose
# `connection`) before it asks the token endpoint; this copy of the template leaves that purpose out.
GRANTED = "kms:EncryptionContext:purpose: [client_secret, connection]"
NARROWED = "kms:EncryptionContext:purpose: [client_secret]"


def narrowed_template(directory: Path) -> Path:
    text = DEFAULT_TEMPLATE.read_text(encoding="utf-8")
    start = text.index("  StartAuthorizationFunction:\n")
    end = text.index("\n  StartAuthorizationLogGroup:")
    function = text[start:end]
    assert function.count(GRANTED) == 1
    text = text[:start] + function.replace(GRANTED, NARROWED) + text[end:]
    # The copy lives elsewhere: code and layer paths stay those of the repository.
    text = re.sub(r"^(\s+(?:CodeUri|ContentUri): )(?!/)", rf"\g<1>{REPO_ROOT}/", text, flags=re.MULTILINE)
    path = directory / "template.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def narrowed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("iam-narrowed")
    with Stack(template_path=narrowed_template(directory), repo_root=REPO_ROOT, state_dir=directory / "state") as stack:
        yield stack


def test_a_decryption_the_policy_does_not_allow_is_refused_as_key_unavailable(narrowed_stack: Stack) -> None:
    client = ApiClient(narrowed_stack).as_tenant(f"iam-{uuid.uuid4().hex[:8]}")
    created = client.post(
        "/connections",
        json={
            "name": "service account",
            "grant_type": "client_credentials",
            "client_id": "iam-client",
            "client_secret": "iam-client-secret",
            "token_auth_method": "client_secret_post",
            "token_url": "http://127.0.0.1:9/token",
        },
    )
    assert created.status_code == 201, created.text

    answer = client.post(f"/connections/{created.json()['id']}/authorize", json={})

    assert answer.status_code == 500, answer.text
    assert answer.json()["error"]["code"] == "key_unavailable"
    denials = narrowed_stack.iam_denials()
    assert len(denials) == 1
    assert denials[0].startswith("IAM denied StartAuthorizationFunction: ")
    assert (
        "is not authorized to perform: kms:Decrypt on resource: " + narrowed_stack.attributes["EncryptionKey"]["Arn"]
        in denials[0]
    )
    assert "'kms:encryptioncontext:purpose': ('connection',)" in denials[0]


def test_requests_signed_with_other_keys_stay_unrestricted(narrowed_stack: Stack) -> None:
    kms = narrowed_stack.boto3_client("kms")
    key = narrowed_stack.attributes["EncryptionKey"]["Arn"]
    blob = kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext={"purpose": "connection"})
    opened = kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"purpose": "connection"})
    assert opened["Plaintext"] == blob["Plaintext"]
