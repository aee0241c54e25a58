"""Peak memory and throughput of a feed fetch: does a large feed stream, or does it end up in memory?

A loopback server (tests/support/feed_server.py) serves a generated YML catalog of about `size_mb` MB; a
fresh interpreter registers a public feed and runs `feed_fetch.run_feed` once against moto provisioned
from template.yaml (the stored object is checked), and reports its peak RSS. A second fresh interpreter
imports the same modules and fetches nothing: the baseline. The difference is what fetching costs;
measured at two feed sizes, it shows whether that cost grows with the feed.

Peak RSS is the process's VmHWM (Linux). getrusage's ru_maxrss would be wrong here: at exec, Linux folds
the parent's RSS into the child's ru_maxrss, and the parent runs moto, which holds every stored feed.

    PYTHONPATH=.:layers/shared:clients/python/src .venv/bin/python -m benchmarks.feed_memory [size_mb]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3

REPO = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
REGION = "eu-central-1"

CHILD_SCRIPT = r"""
import json, resource, sys, time
mode, url, tenant_id = sys.argv[1], sys.argv[2], sys.argv[3]
import boto3, botocore, requests, urllib3, pynamodb.models
import oauth_connections_client
from benchmarks.environment import fetch_feed_once, import_feed_fetch
import_feed_fetch()
result = fetch_feed_once(url, tenant_id) if mode == "fetch" else {}
# Peak RSS of this process's own memory (VmHWM). getrusage's ru_maxrss is no use here: Linux carries the
# parent's RSS into it at exec, and the parent holds moto's copy of every stored feed.
result["peak_kb"] = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
result["ru_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(result))
"""


def offers_for(size_mb: float) -> int:
    from tests.support.feed_server import catalog_facts

    per_offer = catalog_facts(1000).size / 1000
    return max(1, round(size_mb * MB / per_offer))


class Moto:
    """moto in server mode, provisioned from template.yaml (as benchmarks/environment.py does)."""

    def __enter__(self) -> Moto:
        import logging

        from moto.server import ThreadedMotoServer

        from devstack.aws import Provisioner
        from devstack.template import load_template, parameter_values
        from tests.conftest import free_port

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.server.start()
        self.url = f"http://127.0.0.1:{port}"
        template = load_template(REPO / "template.yaml")
        fields = {"api_url": "https://api.example.com", "lambda_url": "", "aws_url": self.url}
        provisioner = Provisioner(
            template,
            parameter_values(template, {}, fields),
            self.client,
            api_url=fields["api_url"],
            stack_name="bench-feeds",
        )
        provisioner.provision()
        self.table = str(provisioner.attributes["ConnectionsTable"]["Ref"])
        self.bucket = str(provisioner.attributes["FeedsBucket"]["Ref"])
        self.key_arn = str(provisioner.attributes["EncryptionKey"]["Arn"])
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def client(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",  # moto takes any credentials
            aws_secret_access_key="testing",
        )

    def child_env(self, max_bytes: int) -> dict[str, str]:
        return os.environ | {
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "layers" / "shared"), str(REPO / "clients" / "python" / "src"), str(REPO)]
            ),
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "CONNECTIONS_TABLE_NAME": self.table,
            "ENCRYPTION_KEY_ARN": self.key_arn,
            "FEEDS_BUCKET_NAME": self.bucket,
            "FEED_MAX_BYTES": str(max_bytes),
            "ALLOW_INSECURE_LOOPBACK_URLS": "true",
            "POWERTOOLS_SERVICE_NAME": "oauth-connections",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "OAuthConnectionsBench",
        }


def child(moto: Moto, mode: str, url: str, tenant_id: str, max_bytes: int) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-c", CHILD_SCRIPT, mode, url, tenant_id],
        capture_output=True,
        text=True,
        check=True,
        env=moto.child_env(max_bytes),
        timeout=600,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def fetch_once(moto: Moto, size_mb: float) -> dict[str, Any]:
    """One fetch of a fresh ~size_mb MB catalog in a fresh interpreter; checks what was stored."""
    from tests.support.feed_server import Catalog, FeedServer, catalog_facts

    offers = offers_for(size_mb)
    facts = catalog_facts(offers)
    tenant_id = f"bench-{time.time_ns()}"
    with FeedServer() as server:
        url = server.serve("/catalog.yml", Catalog(offers=offers))
        result = child(moto, "fetch", url, tenant_id, max_bytes=2 * facts.size)
    if (result["status"], result["bytes"], result["items"]) != ("succeeded", facts.size, offers):
        raise RuntimeError(f"the benchmark fetch did not store the catalog: {result}")
    head = moto.client("s3").head_object(Bucket=moto.bucket, Key=result["s3_key"])
    if head["ContentLength"] != facts.size:
        raise RuntimeError(f"S3 holds {head['ContentLength']} bytes, the feed has {facts.size}")
    return result | {"offers": offers, "size": facts.size}


def measure(size_mb: int = 100) -> list[tuple[str, str, str]]:
    with Moto() as moto:
        baseline = child(moto, "baseline", "", "", max_bytes=MB)["peak_kb"] / 1024
        results = [fetch_once(moto, size_mb / 4), fetch_once(moto, size_mb)]
    rows = [
        ("feed fetch baseline peak RSS", f"{baseline:.0f} MB", "fresh interpreter, same modules imported, no fetch")
    ]
    for result in results:
        size, peak = result["size"] / MB, result["peak_kb"] / 1024
        rows += [
            (
                f"feed fetch peak RSS, {size:.0f} MB feed",
                f"{peak:.0f} MB",
                f"+{peak - baseline:.0f} MB over the baseline; {result['offers']} offers, run_feed once",
            ),
            (
                f"feed fetch throughput, {size:.0f} MB feed",
                f"{size / result['seconds']:.0f} MB/s",
                f"{result['seconds']:.1f} s: loopback HTTP, streamed YML check, S3 multipart to moto",
            ),
        ]
    small, large = results
    rows.append(
        (
            f"feed fetch peak RSS growth, {small['size'] / MB:.0f} to {large['size'] / MB:.0f} MB feed",
            f"{(large['peak_kb'] - small['peak_kb']) / 1024:+.0f} MB",
            "the body streams through one 5 MiB S3 part buffer: memory does not follow the feed size",
        )
    )
    return rows


if __name__ == "__main__":
    for row in measure(int(sys.argv[1]) if len(sys.argv) > 1 else 100):
        print(" | ".join(row))
