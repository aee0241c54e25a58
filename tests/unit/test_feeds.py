"""Feeds in-process: the API's rules, the content checks, and fetches of public feeds into S3."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import boto3
import pytest

from oauth_connections import feed_fetch, storage
from oauth_connections.config import get_settings
from oauth_connections.cron import Cron, CronError, next_run
from oauth_connections.feed_formats import FeedContentError, checker_for
from tests.conftest import InProcessApi, Resources
from tests.support.provider import OidcProvider
from tests.unit.flow_helpers import create_connection

CATALOG_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<yml_catalog date="2026-11-28 10:00"><shop><name>Shop</name><offers>'
)
CATALOG_TAIL = b"</offers></shop></yml_catalog>\n"


def catalog(offers: int) -> bytes:
    body = b"".join(
        b'<offer id="%d" available="true"><name>Item %d</name><price>%d.00</price></offer>' % (i, i, i)
        for i in range(offers)
    )
    return CATALOG_HEAD + body + CATALOG_TAIL


# ------------------------------------------------------------------ schedules and content checks


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 * * * *", datetime(2026, 11, 28, 16, 13, tzinfo=UTC), datetime(2026, 11, 28, 16, 15, tzinfo=UTC)),
        ("0 3 * * *", datetime(2026, 11, 28, 16, 13, tzinfo=UTC), datetime(2026, 11, 29, 3, 0, tzinfo=UTC)),
        ("30 2 * * 1", datetime(2026, 11, 28, 16, 13, tzinfo=UTC), datetime(2026, 11, 30, 2, 30, tzinfo=UTC)),
        ("0 0 29 2 *", datetime(2026, 11, 28, 16, 13, tzinfo=UTC), datetime(2028, 2, 29, 0, 0, tzinfo=UTC)),
        ("0 12 * * 7", datetime(2026, 11, 28, 16, 13, tzinfo=UTC), datetime(2026, 11, 29, 12, 0, tzinfo=UTC)),
        ("5 4 1,15 * *", datetime(2026, 12, 1, 4, 5, tzinfo=UTC), datetime(2026, 12, 15, 4, 5, tzinfo=UTC)),
    ],
)
def test_cron_next_run(expression: str, after: datetime, expected: datetime) -> None:
    assert next_run(f"cron:{expression}", after) == expected


@pytest.mark.parametrize("expression", ["* * *", "60 * * * *", "*/0 * * * *", "0 0 31 2 *", "a b c d e", "0 24 * * *"])
def test_bad_cron(expression: str) -> None:
    with pytest.raises(CronError):
        Cron.parse(expression)


def run_checker(feed_format: str, data: bytes, step: int = 7) -> int | None:
    checker = checker_for(feed_format)
    for offset in range(0, len(data), step):
        checker.feed(data[offset : offset + step])
    return checker.finish()


def test_yml_offers_are_counted_exactly_across_chunk_borders() -> None:
    assert run_checker("yml", catalog(1234), step=13) == 1234
    assert run_checker("xml", catalog(3)) is None


@pytest.mark.parametrize(
    ("feed_format", "data"),
    [
        ("yml", b"<root><offers/></root>"),
        ("yml", b"<yml_catalog><shop><name>x</name></shop></yml_catalog>"),
        ("yml", catalog(5)[:-20]),
        ("xml", b"<a><b></a>"),
        ("xml", b""),
        ("csv", b"id,name\n1\n"),
        ("csv", b""),
        ("csv", b"\xff\xfe not utf-8"),
        ("json", b"[1, 2"),
        ("json", b"[1] trailing"),
        ("json", b'{"a": "unterminated}'),
    ],
)
def test_bad_content_is_refused(feed_format: str, data: bytes) -> None:
    with pytest.raises(FeedContentError):
        run_checker(feed_format, data)


def test_csv_and_json_counts() -> None:
    assert run_checker("csv", b'id,name\n1,"a,b"\n2,"two\nlines"\n3,c\n') == 3
    assert run_checker("json", b'[{"id": 1, "name": "a]"}, {"id": 2}, 3]') == 3
    assert run_checker("json", b'{"offers": [1, 2]}') is None


# ------------------------------------------------------------------ the feeds API


def feed_body(**fields: Any) -> dict[str, Any]:
    return {"name": "Catalog", "url": "https://shop.example.com/catalog.xml", "schedule": 60, "format": "yml"} | fields


def test_feed_crud(api: InProcessApi) -> None:
    created = api.call("create_feed", body=feed_body(schedule="0 3 * * *"))
    assert created.status == 201, created.text
    feed = created.json()
    assert feed["schedule"] == "0 3 * * *"
    assert feed["next_run_at"].endswith(("T03:00:00Z", "T03:00:00+00:00"))
    assert api.call("get_feed", feed_id=feed["id"]).json() == feed
    patched = api.call("update_feed", feed_id=feed["id"], body={"schedule": 15, "enabled": False})
    assert patched.status == 200, patched.text
    assert patched.json()["next_run_at"] is None  # disabled feeds are not scheduled
    listed = api.call("list_feeds").json()
    assert feed["id"] in [f["id"] for f in listed["items"]]
    assert api.call("list_feed_runs", feed_id=feed["id"]).json() == {"items": []}
    assert api.call("delete_feed", feed_id=feed["id"]).status == 204
    assert api.call("get_feed", feed_id=feed["id"]).status == 404


def test_feed_pages_carry_a_cursor_only_when_more_feeds_exist(service_env: Resources) -> None:
    api = InProcessApi(tenant=f"feed-pages-{time.time_ns()}")
    ids = []
    for index in range(3):
        created = api.call("create_feed", body=feed_body(name=f"Catalog {index}"))
        assert created.status == 201, created.text
        ids.append(created.json()["id"])
    whole = api.call("list_feeds", query={"limit": "3"}).json()
    assert [feed["id"] for feed in whole["items"]] == ids and whole["next_cursor"] is None
    first = api.call("list_feeds", query={"limit": "2"}).json()
    assert [feed["id"] for feed in first["items"]] == ids[:2] and first["next_cursor"] is not None
    rest = api.call("list_feeds", query={"limit": "2", "cursor": first["next_cursor"]}).json()
    assert [feed["id"] for feed in rest["items"]] == ids[2:] and rest["next_cursor"] is None


@pytest.mark.parametrize(
    "fields",
    [
        {"schedule": 4},
        {"schedule": "61 * * * *"},
        {"schedule": "every day"},
        {"format": "xlsx"},
        {"url": "https://169.254.169.254/catalog"},
        {"url": "http://shop.example.com/catalog"},
        {"connection_id": "con_" + "0" * 26},
        {"enabled": "yes"},
        {"unknown": 1},
    ],
)
def test_bad_feeds_are_refused(api: InProcessApi, fields: dict[str, Any]) -> None:
    response = api.call("create_feed", body=feed_body(**fields))
    assert response.status == 422, response.text
    assert set(response.json()) == {"error"}


def test_feed_cannot_use_another_tenants_connection(flow_api: InProcessApi, provider: OidcProvider) -> None:
    theirs = create_connection(
        flow_api.as_tenant(f"{flow_api.tenant}-other"), provider, allowed_urls=["https://shop.example.com/"]
    )
    response = flow_api.call("create_feed", body=feed_body(connection_id=theirs["id"]))
    assert response.status == 422
    mine = create_connection(flow_api, provider, allowed_urls=["https://shop.example.com/feeds/"])
    outside = flow_api.call("create_feed", body=feed_body(connection_id=mine["id"]))
    assert outside.status == 422
    assert "allowed_urls" in outside.json()["error"]["message"]
    inside = flow_api.call(
        "create_feed", body=feed_body(connection_id=mine["id"], url="https://shop.example.com/feeds/a.xml")
    )
    assert inside.status == 201


def test_other_tenants_see_no_feed(api: InProcessApi) -> None:
    feed = api.call("create_feed", body=feed_body()).json()
    intruder = api.as_tenant("intruder")
    for function in ("get_feed", "delete_feed", "run_feed", "list_feed_runs"):
        assert intruder.call(function, feed_id=feed["id"]).status == 404
    assert intruder.call("update_feed", feed_id=feed["id"], body={"name": "x"}).status == 404


def test_run_now_queues_a_fetch(api: InProcessApi, service_env: Resources) -> None:
    feed = api.call("create_feed", body=feed_body()).json()
    assert api.call("run_feed", feed_id=feed["id"]).status == 202
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(QueueUrl=service_env.feed_queue_url, MaxNumberOfMessages=10)["Messages"]
    assert any(feed["id"] in m["Body"] and '"manual"' in m["Body"] for m in messages)
    for message in messages:
        sqs.delete_message(QueueUrl=service_env.feed_queue_url, ReceiptHandle=message["ReceiptHandle"])


# ------------------------------------------------------------------ fetching public feeds


class _Feeds(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body: ClassVar[dict[str, bytes]] = {}
    sent: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        path = self.path
        if path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            time.sleep(3)
            return
        if path == "/to-private":
            self.send_response(302)
            self.send_header("Location", "http://10.0.0.1/feed.xml")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = self.body[path]
        if self.headers.get("If-None-Match") == '"v1"' and path == "/catalog.xml":
            self.send_response(304)
            self.send_header("ETag", '"v1"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        encoded = gzip.compress(data) if path.endswith(".gz.xml") else data
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("ETag", '"v1"')
        if path.endswith(".gz.xml"):
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.sent[path] = 0
        try:
            for offset in range(0, len(encoded), 65536):
                self.wfile.write(encoded[offset : offset + 65536])
                self.sent[path] += min(65536, len(encoded) - offset)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def feed_server() -> Iterator[str]:
    handler = type(
        "Feeds",
        (_Feeds,),
        {
            "body": {
                "/catalog.xml": catalog(500),
                "/catalog.gz.xml": catalog(700),
                "/broken.xml": catalog(10)[:-30],
                "/huge.xml": catalog(40_000),
            },
            "sent": {},
        },
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def fetcher_env(flow_api: InProcessApi, monkeypatch: pytest.MonkeyPatch) -> InProcessApi:
    monkeypatch.setenv("FEED_MAX_BYTES", str(1024 * 1024))
    monkeypatch.setenv("FEED_READ_TIMEOUT_SECONDS", "1")
    get_settings.cache_clear()
    return flow_api


def fetch(api: InProcessApi, url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    feed = api.call("create_feed", body=feed_body(url=url, name=url)).json()
    status = feed_fetch.run_feed(get_settings(), api.tenant, feed["id"], "manual")
    runs = api.call("list_feed_runs", feed_id=feed["id"]).json()["items"]
    assert runs[0]["status"] == status
    return feed, runs[0]


def object_of(resources: Resources, key: str) -> dict[str, Any]:
    return dict(boto3.client("s3").get_object(Bucket=resources.feeds_bucket, Key=key))


def test_public_feed_is_stored_then_not_modified(
    fetcher_env: InProcessApi, feed_server: str, service_env: Resources
) -> None:
    feed, run = fetch(fetcher_env, feed_server + "/catalog.xml")
    assert run["status"] == "succeeded"
    assert run["items"] == 500
    assert run["bytes"] == len(catalog(500))
    stored = object_of(service_env, run["s3_key"])
    assert stored["Body"].read() == catalog(500)
    feed_fetch.run_feed(get_settings(), fetcher_env.tenant, feed["id"], "manual")
    latest = fetcher_env.call("list_feed_runs", feed_id=feed["id"]).json()["items"][0]
    assert latest["status"] == "not_modified"
    assert latest["http_status"] == 304
    assert object_of(service_env, run["s3_key"])["VersionId"] == stored["VersionId"]
    view = fetcher_env.call("get_feed", feed_id=feed["id"]).json()
    assert view["last_items"] == 500
    assert view["last_status"] == "not_modified"


def test_gzip_feed_is_stored_decoded(fetcher_env: InProcessApi, feed_server: str, service_env: Resources) -> None:
    _, run = fetch(fetcher_env, feed_server + "/catalog.gz.xml")
    assert run["status"] == "succeeded"
    assert run["items"] == 700
    assert object_of(service_env, run["s3_key"])["Body"].read() == catalog(700)


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/broken.xml", "invalid_content"),
        ("/huge.xml", "too_large"),
        ("/stall", "timeout"),
        ("/to-private", "unsafe_url"),
    ],
)
def test_failed_runs_keep_the_last_good_object(
    fetcher_env: InProcessApi, feed_server: str, service_env: Resources, path: str, code: str
) -> None:
    feed, good = fetch(fetcher_env, feed_server + "/catalog.xml")
    before = object_of(service_env, good["s3_key"])
    record = storage.load_feed(fetcher_env.tenant, feed["id"])
    record.update(actions=[storage.FeedRecord.url.set(feed_server + path), storage.FeedRecord.etag.remove()])
    assert feed_fetch.run_feed(get_settings(), fetcher_env.tenant, feed["id"], "manual") == "failed"
    failed = fetcher_env.call("list_feed_runs", feed_id=feed["id"]).json()["items"][0]
    assert failed["error_code"] == code, failed
    assert failed["error_message"]
    after = object_of(service_env, good["s3_key"])
    assert after["VersionId"] == before["VersionId"]
    assert after["Body"].read() == catalog(500)


def test_oversized_feed_stops_at_the_limit(fetcher_env: InProcessApi, feed_server: str) -> None:
    _, run = fetch(fetcher_env, feed_server + "/huge.xml")
    assert run["error_code"] == "too_large"
    assert run["bytes"] == 0 or run["bytes"] <= 1024 * 1024 + feed_fetch.CHUNK_BYTES
