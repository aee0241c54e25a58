"""Fetching one feed: the consumer helper's token (or none for a public feed), the SSRF guard on the URL
and every redirect, conditional requests, and a streamed, size-limited upload to S3 that only becomes
the feed's object when the content checks out. A failed run never replaces the last good object."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from oauth_connections import aws, events, storage
from oauth_connections.config import Settings, url_policy
from oauth_connections.errors import ConfigurationError, NotFoundError, UnsafeUrlError
from oauth_connections.feed_formats import FeedContentError, checker_for
from oauth_connections.feeds import R, schedule_next
from oauth_connections.ids import new_id
from oauth_connections.observability import logger
from oauth_connections.storage import FeedRecord, FeedRunRecord, utcnow

CHUNK_BYTES = 1024 * 1024
PART_BYTES = 8 * 1024 * 1024  # S3 multipart parts (at least 5 MiB each but the last)
MAX_REDIRECTS = 5
EXTENSIONS = {"yml": "xml", "xml": "xml", "csv": "csv", "json": "json"}
CONTENT_TYPES = {"yml": "application/xml", "xml": "application/xml", "csv": "text/csv", "json": "application/json"}


class FetchFailed(Exception):
    def __init__(self, code: str, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass
class FetchOutcome:
    status: str  # succeeded | not_modified
    http_status: int
    bytes: int = 0
    items: int | None = None
    s3_key: str | None = None
    s3_version: str | None = None
    etag: str | None = None
    last_modified: str | None = None


def _s3() -> Any:
    return aws.client("s3")


class StagedUpload:
    """Streams parts to S3 and publishes the object only on commit(); abort() leaves the old one in place.

    Bodies under one part never start a multipart upload: they are put in one request on commit.
    """

    def __init__(self, bucket: str, key: str, content_type: str) -> None:
        self.bucket, self.key, self.content_type = bucket, key, content_type
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= PART_BYTES:
            self._flush(bytes(self.buffer[:PART_BYTES]))
            del self.buffer[:PART_BYTES]

    def _flush(self, data: bytes) -> None:
        if self.upload_id is None:
            created = _s3().create_multipart_upload(Bucket=self.bucket, Key=self.key, ContentType=self.content_type)
            self.upload_id = created["UploadId"]
        number = len(self.parts) + 1
        part = _s3().upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        self.parts.append({"ETag": part["ETag"], "PartNumber": number})

    def commit(self) -> str | None:
        if self.upload_id is None:
            result = _s3().put_object(
                Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer), ContentType=self.content_type
            )
            return cast(str | None, result.get("VersionId"))
        if self.buffer:
            self._flush(bytes(self.buffer))
            self.buffer.clear()
        result = _s3().complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )
        return cast(str | None, result.get("VersionId"))

    def abort(self) -> None:
        self.buffer.clear()
        if self.upload_id is not None:
            _s3().abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            self.upload_id = None


def object_key(record: FeedRecord) -> str:
    return f"feeds/{record.tenant_id}/{record.feed_id}/latest.{EXTENSIONS.get(record.format, 'dat')}"


def _session(settings: Settings, record: FeedRecord) -> Any:
    from oauth_connections.netguard import guarded_session

    if record.connection_id:
        from oauth_connections.consumer import AuthorizedSession

        return AuthorizedSession(record.tenant_id, record.connection_id, policy=url_policy())
    return guarded_session(url_policy())


def fetch(settings: Settings, record: FeedRecord) -> FetchOutcome:
    import requests

    from oauth_connections import consumer

    if not settings.feeds_bucket_name:
        raise ConfigurationError("FEEDS_BUCKET_NAME is not set")
    headers = {"Accept-Encoding": "gzip, deflate", "User-Agent": "oauth-connections-feeds/1.0"}
    if record.last_good_key:
        if record.etag:
            headers["If-None-Match"] = record.etag
        if record.last_modified:
            headers["If-Modified-Since"] = record.last_modified
    session = _session(settings, record)
    session.max_redirects = MAX_REDIRECTS
    timeout = (settings.feed_connect_timeout_seconds, settings.feed_read_timeout_seconds)
    try:
        response = session.get(record.url, headers=headers, stream=True, timeout=timeout)
    except consumer.UrlNotAllowedError as error:
        raise FetchFailed("url_not_allowed", error.message) from error
    except consumer.TokenServiceError as error:
        raise FetchFailed(error.code, f"no token for the feed's connection: {error.message}") from error
    except UnsafeUrlError as error:
        raise FetchFailed("unsafe_url", error.message) from error
    except requests.TooManyRedirects as error:
        raise FetchFailed("too_many_redirects", "the feed redirects too often") from error
    except requests.Timeout as error:
        raise FetchFailed("timeout", "the feed server did not answer in time") from error
    except requests.ConnectionError as error:
        cause = "refused by the URL guard" if "URL guard" in str(error) else "connection failed"
        raise FetchFailed("unsafe_url" if "URL guard" in str(error) else "unreachable", f"feed {cause}") from error
    with response:
        if response.status_code == 304:
            return FetchOutcome("not_modified", 304, etag=record.etag, last_modified=record.last_modified)
        if response.status_code == 401:
            raise FetchFailed(
                "unauthorized", "the feed server refused the token, also after a refresh", http_status=401
            )
        if response.status_code != 200:
            raise FetchFailed(
                "http_error", f"the feed server answered HTTP {response.status_code}", http_status=response.status_code
            )
        return _store(settings, record, response)


def _store(settings: Settings, record: FeedRecord, response: Any) -> FetchOutcome:
    import requests
    import urllib3.exceptions

    assert settings.feeds_bucket_name
    key = object_key(record)
    upload = StagedUpload(settings.feeds_bucket_name, key, CONTENT_TYPES.get(record.format, "application/octet-stream"))
    checker = checker_for(record.format)
    total = 0
    deadline = time.monotonic() + settings.feed_max_seconds
    try:
        declared = response.headers.get("Content-Length")
        if (
            declared
            and declared.isdigit()
            and not response.headers.get("Content-Encoding")
            and int(declared) > settings.feed_max_bytes
        ):
            raise FetchFailed("too_large", f"the feed is larger than {settings.feed_max_bytes} bytes", http_status=200)
        raw = response.raw
        while True:
            if time.monotonic() > deadline:
                raise FetchFailed("timeout", "the feed took too long to download", http_status=200)
            # read1 returns what has arrived (decoded), so a trickling server cannot outlast the deadline.
            chunk = raw.read1(CHUNK_BYTES, decode_content=True)
            if not chunk:
                break
            total += len(chunk)
            if total > settings.feed_max_bytes:
                raise FetchFailed(
                    "too_large", f"the feed is larger than {settings.feed_max_bytes} bytes", http_status=200
                )
            checker.feed(chunk)
            upload.write(chunk)
        items = checker.finish()
        version = upload.commit()
    except FeedContentError as error:
        upload.abort()
        raise FetchFailed("invalid_content", str(error)[:300], http_status=200) from error
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
        upload.abort()
        if _is_timeout(error):
            raise FetchFailed("timeout", "the feed server stopped sending", http_status=200) from error
        raise FetchFailed(
            "download_failed", f"the download broke off: {type(error).__name__}", http_status=200
        ) from error
    except FetchFailed:
        upload.abort()
        raise
    return FetchOutcome(
        "succeeded",
        200,
        bytes=total,
        items=items,
        s3_key=key,
        s3_version=version,
        etag=response.headers.get("ETag"),
        last_modified=response.headers.get("Last-Modified"),
    )


def _is_timeout(error: BaseException) -> bool:
    import requests
    from urllib3.exceptions import ReadTimeoutError

    return isinstance(error, (requests.Timeout, ReadTimeoutError, TimeoutError)) or any(
        isinstance(arg, BaseException) and _is_timeout(arg) for arg in error.args
    )


def run_feed(settings: Settings, tenant_id: str, feed_id: str, trigger: str) -> str:
    """One fetch of a feed, recorded as a run; returns the run's status."""
    storage.bind_table(settings.connections_table_name)
    try:
        record = storage.load_feed(tenant_id, feed_id, consistent=True)
    except NotFoundError:
        return "gone"
    if not record.enabled and trigger == "schedule":
        return "disabled"
    started = utcnow()
    clock = time.monotonic()
    run = FeedRunRecord(
        storage.runs_key(tenant_id, feed_id),
        f"{storage.RUN_PREFIX}{(run_id := new_id('run'))}",
        tenant_id=tenant_id,
        feed_id=feed_id,
        run_id=run_id,
        trigger=trigger,
        status="running",
        started_at=started,
        expires_at_epoch=started + timedelta(days=settings.feed_runs_kept_days),
    )
    storage.save_run(run)
    context = {"tenant_id": tenant_id, "feed_id": feed_id, "run_id": run_id}
    actions: list[Any] = [R.last_run_id.set(run_id), R.last_run_at.set(started)]
    try:
        outcome = fetch(settings, record)
    except FetchFailed as failure:
        run.status, run.error_code, run.error_message = "failed", failure.code, failure.message[:300]
        run.http_status = failure.http_status
        logger.warning("feed fetch failed", extra=context | {"error_code": failure.code})
        events.publish(
            settings.event_bus_name,
            "feed.fetch_failed",
            tenant_id=tenant_id,
            connection_id=record.connection_id or "",
            feed_id=feed_id,
            run_id=run_id,
            status="failed",
            reason=failure.code,
        )
    else:
        run.status, run.http_status, run.bytes, run.items = (
            outcome.status,
            outcome.http_status,
            outcome.bytes,
            outcome.items,
        )
        run.s3_key, run.s3_version = outcome.s3_key, outcome.s3_version
        if outcome.status == "succeeded":
            actions += [
                R.last_good_key.set(outcome.s3_key or ""),
                R.last_good_at.set(utcnow()),
                R.etag.set(outcome.etag) if outcome.etag else R.etag.remove(),
                R.last_modified.set(outcome.last_modified) if outcome.last_modified else R.last_modified.remove(),
            ]
            if outcome.s3_version:
                actions.append(R.last_good_version.set(outcome.s3_version))
            if outcome.items is not None:
                actions.append(R.last_items.set(outcome.items))
        logger.info(
            "feed fetched", extra=context | {"status": outcome.status, "bytes": outcome.bytes, "items": outcome.items}
        )
        events.publish(
            settings.event_bus_name,
            "feed.fetched",
            tenant_id=tenant_id,
            connection_id=record.connection_id or "",
            feed_id=feed_id,
            run_id=run_id,
            status=outcome.status,
            reason=trigger,
            bytes=outcome.bytes,
            items=outcome.items,
        )
    run.finished_at = utcnow()
    run.duration_ms = int((time.monotonic() - clock) * 1000)
    storage.save_run(run)
    actions.append(R.last_status.set(run.status))
    if trigger == "manual" and record.enabled:
        schedule_next(settings, record, utcnow())
        actions += [
            R.next_run_at.set(record.next_run_at),
            R.due_shard.set(record.due_shard),
            R.due_at.set(record.due_at),
        ]
    storage.update_feed(record, actions)
    return str(run.status)
