"""Feeds in-process: the API's rules, the content checks, and fetches of public feeds into S3."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import boto3
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from oauth_connections.core.config import get_settings
from oauth_connections.feeds.cron import Cron, CronError, next_run
from oauth_connections.feeds.fetch import CHUNK_BYTES, PART_BYTES, RECORD_RESERVE_SECONDS, _s3, record_feed_run
from oauth_connections.feeds.formats import FeedContentError, checker_for
from oauth_connections.storage.due import due_page
from oauth_connections.storage.feeds import FEEDS, FeedRecord, record_feed_outcome
from tests.conftest import InProcessApi, LambdaContext, Resources, load_handler, sample_event
from tests.support.feed_server import FeedServer, Trickle
from tests.support.provider import OidcProvider
from tests.unit.flow_helpers import create_connection

CATALOG_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<yml_catalog date="2026-11-28 10:00"><shop><name>Shop</name><offers>'
)
CATALOG_TAIL = b"</offers></shop></yml_catalog>\n"
BIG_OFFERS = 120_000  # about 10 MB: a multipart upload of two parts


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


@pytest.mark.parametrize(
    "expression",
    [
        "* * *",
        "60 * * * *",
        "*/0 * * * *",
        "0 0 31 2 *",
        "a b c d e",
        "0 24 * * *",
        "\u0663 * * * *",
        "*/\uff15 * * * *",
    ],
)
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


def checker_memory(offers: int) -> int:
    """Bytes the YML checker still holds after checking `offers` offers fed in the fetch's chunk size."""
    checker = checker_for("yml")
    offer = b'<offer id="1" available="true"><name>Item</name><price>1.00</price></offer>'
    per_chunk = CHUNK_BYTES // len(offer)
    tracemalloc.start()
    try:
        checker.feed(CATALOG_HEAD)
        for start in range(0, offers, per_chunk):
            checker.feed(offer * min(per_chunk, offers - start))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    checker.feed(CATALOG_TAIL)
    assert checker.finish() == offers
    return held


def test_the_yml_checker_keeps_no_checked_offer() -> None:
    """The parser builds a chunk's elements before the checker sees them: every finished offer must
    still leave its parent, or memory grows with the feed (about 80 bytes per offer)."""
    assert checker_memory(60_000) - checker_memory(6_000) < 256 * 1024


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


def test_runs_and_the_schedule_keep_a_feeds_etag_and_never_refuse_an_edit(api: InProcessApi) -> None:
    created = api.call("create_feed", body=feed_body(name="Catalog"))
    assert created.status == 201, created.text
    feed = created.json()
    etag = created.headers["ETag"]
    read = FEEDS.load(api.tenant, feed["id"], consistent=True)  # an edit's read, before a run lands
    # A run and the dispatcher write the feed meanwhile: its write version moves, its settings' does not.
    assert record_feed_outcome(read, [FeedRecord.last_status.set("succeeded"), FeedRecord.last_items.set(7)])
    assert record_feed_outcome(read, [FeedRecord.next_run_at.set(datetime(2030, 1, 1, tzinfo=UTC))])
    assert api.call("get_feed", feed_id=feed["id"]).headers["ETag"] == etag

    stale_read = FEEDS.load(api.tenant, feed["id"], consistent=True)
    assert record_feed_outcome(stale_read, [FeedRecord.last_run_id.set("run_after_the_read")])
    edited = FEEDS.edit(stale_read, lambda record: setattr(record, "name", "Renamed"), if_match=1)
    assert edited.name == "Renamed" and edited.settings_version == 2
    stored = FEEDS.load(api.tenant, feed["id"], consistent=True)
    assert (stored.name, stored.last_run_id, stored.last_items) == ("Renamed", "run_after_the_read", 7)

    patched = api.call("update_feed", feed_id=feed["id"], body={"enabled": False}, headers={"if-match": etag})
    assert patched.status == 412, patched.text  # the rename moved the settings past the ETag read
    assert patched.json()["error"]["code"] == "stale_update"
    fresh = api.call("get_feed", feed_id=feed["id"])
    assert fresh.headers["ETag"] == '"2"'
    patched = api.call("update_feed", feed_id=feed["id"], body={"enabled": False}, headers={"if-match": '"2"'})
    assert patched.status == 200, patched.text
    assert patched.headers["ETag"] == '"3"' and patched.json()["enabled"] is False


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
    for function in ("get_feed", "delete_feed", "run_feed", "list_feed_runs", "list_feed_activity"):
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
        if path == "/odd-length.xml":  # a length in non-ASCII digits: no length at all, read to the end
            self.send_response(200)
            self.send_header("Content-Length", "\u00b2")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(catalog(5))
            self.close_connection = True
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
                "/big.xml": catalog(BIG_OFFERS),
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
    status = record_feed_run(get_settings(), api.tenant, feed["id"], "manual")
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
    record_feed_run(get_settings(), fetcher_env.tenant, feed["id"], "manual")
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
    record = FEEDS.load(fetcher_env.tenant, feed["id"])
    record.update(
        actions=[FeedRecord.url.set(feed_server + path), FeedRecord.etag.remove()], add_version_condition=False
    )
    assert record_feed_run(get_settings(), fetcher_env.tenant, feed["id"], "manual") == "failed"
    failed = fetcher_env.call("list_feed_runs", feed_id=feed["id"]).json()["items"][0]
    assert failed["error_code"] == code, failed
    assert failed["error_message"]
    after = object_of(service_env, good["s3_key"])
    assert after["VersionId"] == before["VersionId"]
    assert after["Body"].read() == catalog(500)


def test_a_content_length_in_other_digits_is_no_length(fetcher_env: InProcessApi, feed_server: str) -> None:
    _, run = fetch(fetcher_env, feed_server + "/odd-length.xml")
    assert run["status"] == "succeeded", run
    assert run["items"] == 5


def test_oversized_feed_stops_at_the_limit(fetcher_env: InProcessApi, feed_server: str) -> None:
    _, run = fetch(fetcher_env, feed_server + "/huge.xml")
    assert run["error_code"] == "too_large"
    assert run["bytes"] == 0 or run["bytes"] <= 1024 * 1024 + CHUNK_BYTES


# ------------------------------------------------------------------ the dispatcher


def dispatched(resources: Resources, feed_ids: set[str]) -> list[dict[str, Any]]:
    """Drain the feed queue (other tests' feeds come due too); the queued fetches of these feeds."""
    sqs = boto3.client("sqs")
    found: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=resources.feed_queue_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            body = json.loads(message["Body"])
            if body["feed_id"] in feed_ids:
                found.append(body)
            sqs.delete_message(QueueUrl=resources.feed_queue_url, ReceiptHandle=message["ReceiptHandle"])
    return found


def dispatch(fired_at: datetime) -> dict[str, Any]:
    event = sample_event("feed_dispatcher") | {"time": fired_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    result: dict[str, Any] = load_handler("feed_dispatcher")(event, LambdaContext())
    return result


def test_the_dispatcher_queues_each_due_feed_once_per_slot(api: InProcessApi, service_env: Resources) -> None:
    feed = api.call("create_feed", body=feed_body(schedule="* * * * *")).json()
    off = api.call("create_feed", body=feed_body(name="off", schedule="* * * * *", enabled=False)).json()
    ids = {feed["id"], off["id"]}
    now = datetime.now(UTC)
    overdue = now - timedelta(minutes=1)
    FEEDS.load(api.tenant, feed["id"]).update(
        actions=[FeedRecord.next_run_at.set(overdue), FeedRecord.due_at.set(overdue)]
    )

    dispatch(now - timedelta(minutes=5))  # a late delivery of an old firing: the function's clock decides
    assert dispatched(service_env, ids) == [{"tenant_id": api.tenant, "feed_id": feed["id"], "trigger": "schedule"}]
    assert datetime.fromisoformat(api.call("get_feed", feed_id=feed["id"]).json()["next_run_at"]) > now

    later = now + timedelta(minutes=2)  # a firing stamped ahead of the clock (the local stack's faster one)
    assert dispatch(later)["queued"] >= 1
    assert [m["feed_id"] for m in dispatched(service_env, ids)] == [feed["id"]]
    moved = api.call("get_feed", feed_id=feed["id"]).json()
    assert datetime.fromisoformat(moved["next_run_at"]) == (later + timedelta(minutes=1)).replace(
        second=0, microsecond=0
    )

    dispatch(later)  # the same slot again: the feed has moved on
    assert dispatched(service_env, ids) == []
    dispatch(later + timedelta(minutes=1))
    assert [m["feed_id"] for m in dispatched(service_env, ids)] == [feed["id"]]


def test_due_feed_keys_name_the_feed(api: InProcessApi, service_env: Resources) -> None:
    feed = api.call("create_feed", body=feed_body(schedule="* * * * *")).json()
    record = FEEDS.load(api.tenant, feed["id"])
    assert record.due_shard
    keys: list[tuple[str, str]] = []
    start = None
    while True:
        page, start = due_page(FEEDS, record.due_shard, datetime.now(UTC) + timedelta(minutes=2), 100, start)
        keys += page
        if not start:
            break
    assert (api.tenant, feed["id"]) in keys


# ------------------------------------------------------------------ every failure ends its run


@pytest.fixture
def big_fetcher_env(flow_api: InProcessApi, monkeypatch: pytest.MonkeyPatch) -> InProcessApi:
    monkeypatch.setenv("FEED_MAX_BYTES", str(32 * 1024 * 1024))
    get_settings.cache_clear()
    return flow_api


@contextmanager
def s3_refuses(*operations: str) -> Iterator[None]:
    """S3 answers AccessDenied to these operations (as it does when the role may not use the bucket's key)."""

    def refuse(model: Any, **kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied by test"}}, model.name)

    events = _s3().meta.events
    for operation in operations:
        events.register(f"before-call.s3.{operation}", refuse, unique_id=f"refuse-{operation}")
    try:
        yield
    finally:
        for operation in operations:
            events.unregister(f"before-call.s3.{operation}", unique_id=f"refuse-{operation}")


def unfinished_uploads(resources: Resources, key: str) -> list[str]:
    """The ids of the multipart uploads of `key` nobody completed or aborted."""
    answer = boto3.client("s3").list_multipart_uploads(Bucket=resources.feeds_bucket, Prefix=key)
    return [upload["UploadId"] for upload in answer.get("Uploads", [])]


def switch_url(api: InProcessApi, feed_id: str, url: str) -> None:
    record = FEEDS.load(api.tenant, feed_id)
    record.update(actions=[FeedRecord.url.set(url), FeedRecord.etag.remove()], add_version_condition=False)


def latest_run(api: InProcessApi, feed_id: str) -> dict[str, Any]:
    run: dict[str, Any] = api.call("list_feed_runs", feed_id=feed_id).json()["items"][0]
    return run


@pytest.mark.parametrize(
    ("path", "operation"),
    [
        ("/big.xml", "CreateMultipartUpload"),
        ("/big.xml", "UploadPart"),
        ("/big.xml", "CompleteMultipartUpload"),
        ("/catalog.gz.xml", "PutObject"),
    ],
)
def test_a_storage_failure_ends_the_run_aborts_the_upload_and_keeps_the_last_good_object(
    big_fetcher_env: InProcessApi, feed_server: str, service_env: Resources, path: str, operation: str
) -> None:
    feed, good = fetch(big_fetcher_env, feed_server + "/catalog.xml")
    before = object_of(service_env, good["s3_key"])
    switch_url(big_fetcher_env, feed["id"], feed_server + path)
    with s3_refuses(operation):
        assert record_feed_run(get_settings(), big_fetcher_env.tenant, feed["id"], "schedule") == "failed"
    failed = latest_run(big_fetcher_env, feed["id"])
    assert (failed["status"], failed["error_code"], failed["http_status"]) == ("failed", "storage_failed", 200)
    assert failed["error_message"] == "the feed could not be stored: AccessDenied"
    assert failed["finished_at"] and failed["s3_key"] is None
    assert unfinished_uploads(service_env, good["s3_key"]) == []
    after = object_of(service_env, good["s3_key"])
    assert after["VersionId"] == before["VersionId"]
    assert after["Body"].read() == catalog(500)
    view = big_fetcher_env.call("get_feed", feed_id=feed["id"]).json()
    assert (view["last_status"], view["last_items"]) == ("failed", 500)


def test_a_big_feed_is_stored_in_parts_of_the_smallest_size_and_a_part_whose_send_broke_is_sent_whole(
    big_fetcher_env: InProcessApi, feed_server: str, service_env: Resources
) -> None:
    broken: list[int] = []

    def break_first_send(request: Any, **_: Any) -> None:
        if not broken:  # the connection drops after the part went out: the retry must rewind it
            broken.append(len(request.body.read()))
            raise ConnectionClosedError(endpoint_url=request.url)

    events = _s3().meta.events
    events.register("before-send.s3.UploadPart", break_first_send, unique_id="break-first-send")
    try:
        _, run = fetch(big_fetcher_env, feed_server + "/big.xml")
    finally:
        events.unregister("before-send.s3.UploadPart", unique_id="break-first-send")
    body = catalog(BIG_OFFERS)
    assert (run["status"], run["bytes"], run["items"]) == ("succeeded", len(body), BIG_OFFERS)
    assert broken == [PART_BYTES]
    stored = object_of(service_env, run["s3_key"])
    assert stored["Body"].read() == body
    parts = -(-len(body) // PART_BYTES)  # all full parts but the last: as few as S3 allows
    assert parts > 1 and stored["ETag"].strip('"').endswith(f"-{parts}")


def test_an_abort_s3_refuses_still_ends_the_run(
    big_fetcher_env: InProcessApi, feed_server: str, service_env: Resources
) -> None:
    feed, good = fetch(big_fetcher_env, feed_server + "/catalog.xml")
    switch_url(big_fetcher_env, feed["id"], feed_server + "/big.xml")
    with s3_refuses("CompleteMultipartUpload", "AbortMultipartUpload"):
        assert record_feed_run(get_settings(), big_fetcher_env.tenant, feed["id"], "schedule") == "failed"
    assert latest_run(big_fetcher_env, feed["id"])["error_code"] == "storage_failed"
    left = unfinished_uploads(service_env, good["s3_key"])
    assert len(left) == 1  # the bucket's lifecycle rule removes it after a day
    boto3.client("s3").abort_multipart_upload(Bucket=service_env.feeds_bucket, Key=good["s3_key"], UploadId=left[0])
    assert object_of(service_env, good["s3_key"])["Body"].read() == catalog(500)


def test_an_unreachable_token_service_ends_the_run(fetcher_env: InProcessApi, feed_server: str) -> None:
    connection = fetcher_env.call(
        "create_connection",
        body={
            "name": "shop",
            "client_id": "feeds-client",
            "client_secret": "feeds-secret",
            "authorization_url": "https://auth.example.com/authorize",
            "token_url": "https://auth.example.com/token",
            "allowed_urls": [feed_server + "/"],
        },
    )
    assert connection.status == 201, connection.text
    feed = fetcher_env.call(
        "create_feed", body=feed_body(url=feed_server + "/catalog.xml", connection_id=connection.json()["id"])
    ).json()
    # No GetTokenFunction exists on this embedded AWS: invoking it fails as a missing or denied function does.
    assert record_feed_run(get_settings(), fetcher_env.tenant, feed["id"], "schedule") == "failed"
    failed = latest_run(fetcher_env, feed["id"])
    assert (failed["status"], failed["error_code"]) == ("failed", "token_service_failed")
    assert failed["error_message"] == "the token service did not answer: ResourceNotFoundException"
    assert failed["finished_at"]


def test_a_run_without_its_bucket_setting_ends_failed(
    fetcher_env: InProcessApi, feed_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = fetcher_env.call("create_feed", body=feed_body(url=feed_server + "/catalog.xml")).json()
    monkeypatch.delenv("FEEDS_BUCKET_NAME")
    get_settings.cache_clear()
    assert record_feed_run(get_settings(), fetcher_env.tenant, feed["id"], "schedule") == "failed"
    failed = latest_run(fetcher_env, feed["id"])
    assert (failed["status"], failed["error_code"]) == ("failed", "configuration_error")
    assert failed["error_message"] == "the run failed unexpectedly (ConfigurationError)"


def test_a_feed_deleted_during_its_run_stays_deleted(
    fetcher_env: InProcessApi, feed_server: str, service_env: Resources
) -> None:
    feed = fetcher_env.call("create_feed", body=feed_body(url=feed_server + "/catalog.xml")).json()

    def delete_meanwhile(**kwargs: Any) -> None:
        assert fetcher_env.call("delete_feed", feed_id=feed["id"]).status == 204

    events = _s3().meta.events
    events.register("before-call.s3.PutObject", delete_meanwhile, unique_id="delete-meanwhile")
    try:
        assert record_feed_run(get_settings(), fetcher_env.tenant, feed["id"], "schedule") == "succeeded"
    finally:
        events.unregister("before-call.s3.PutObject", unique_id="delete-meanwhile")
    key = {"pk": {"S": f"TENANT#{fetcher_env.tenant}"}, "sk": {"S": f"FEED#{feed['id']}"}}
    assert "Item" not in boto3.client("dynamodb").get_item(TableName=service_env.table_name, Key=key)
    assert fetcher_env.call("list_feeds").json()["items"] == []


class ShortInvocation(LambdaContext):
    """An invocation with little time left: the download must stop in time to record its run."""

    def get_remaining_time_in_millis(self) -> int:
        return int((RECORD_RESERVE_SECONDS + 2) * 1000)


def test_a_download_stops_before_the_invocation_ends_and_is_recorded(fetcher_env: InProcessApi) -> None:
    with FeedServer() as server:
        url = server.serve("/trickle.yml", Trickle(seconds=8, interval=0.2))
        feed = fetcher_env.call("create_feed", body=feed_body(url=url)).json()
        event = sample_event("feed_fetch")
        event["Records"][0]["body"] = json.dumps(
            {"tenant_id": fetcher_env.tenant, "feed_id": feed["id"], "trigger": "schedule"}
        )
        started = time.monotonic()
        result = load_handler("feed_fetch")(event, ShortInvocation())
        elapsed = time.monotonic() - started
    assert result == {"batchItemFailures": []}
    assert elapsed < 6  # about 2 s of download, well before the 8 s the feed takes
    failed = latest_run(fetcher_env, feed["id"])
    assert (failed["status"], failed["error_code"]) == ("failed", "timeout")
    assert failed["error_message"] == "the feed took too long to download"
