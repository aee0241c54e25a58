"""Fetching one feed: the consumer client's token (or none for a public feed), the SSRF guard on the URL
and every redirect, conditional requests, and a streamed, size-limited upload to S3 that only becomes
the feed's object when the content checks out. A failed run never replaces the last good object.

Every run that starts ends as a run record: whatever fails (the feed server, the token service, S3, or
our own code) becomes a `failed` run with a code and a message, the staged upload is aborted, and the
queue message is done. A redelivery would fail the same way, so none is asked for."""

from __future__ import annotations

import io
import time
from collections.abc import Buffer
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from oauth_connections.connections import activity
from oauth_connections.core import aws, budget, events
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import Settings
from oauth_connections.core.errors import ConfigurationError, NotFoundError, ServiceError
from oauth_connections.core.ids import new_id
from oauth_connections.core.observability import logger, trace_http
from oauth_connections.feeds.formats import FeedContentError, checker_for
from oauth_connections.feeds.service import schedule_next
from oauth_connections.security.policy import url_policy
from oauth_connections.storage.binding import bind_table
from oauth_connections.storage.feeds import (
    FEEDS,
    RUN_PREFIX,
    FeedRecord,
    FeedRunRecord,
    record_feed_outcome,
    runs_key,
    save_run,
)

CHUNK_BYTES = 256 * 1024  # read from the feed at a time: one decoded chunk, checked, then copied into the part
PART_BYTES = 5 * 1024 * 1024  # S3's smallest multipart part (all but the last): the one buffer a fetch holds
MAX_REDIRECTS = 5
RECORD_RESERVE_SECONDS = 10.0  # a download stops this long before the invocation's end, to record its run
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


class PartBody(io.RawIOBase):
    """A part as a seekable file over the upload's one buffer. botocore reads a file in chunks (the
    checksum, the payload signature, the send) and rewinds it for a retry; `bytes` or a `bytearray`
    body would be a copy of the part, or be copied again into a BytesIO for an aws-chunked upload."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self.view = view
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: len(self.view)}[whence]
        self.position = min(max(0, base + offset), len(self.view))
        return self.position

    def read(self, size: int = -1, /) -> bytes:
        end = len(self.view) if size < 0 else min(len(self.view), self.position + size)
        chunk, self.position = bytes(self.view[self.position : end]), end
        return chunk

    def readinto(self, target: Buffer, /) -> int:
        """What the CRT's signer reads with, when botocore has it."""
        with memoryview(target) as out:
            count = min(len(out), len(self.view) - self.position)
            out[:count] = self.view[self.position : self.position + count]
        self.position += count
        return count


class StagedUpload:
    """Streams parts to S3 and publishes the object only on commit(); abort() leaves the old one in place.

    One buffer of one part holds what is not yet sent, and each part is uploaded from it in place, so
    memory stays at one part whatever the feed's size. Bodies under one part never start a multipart
    upload: they are put in one request on commit.
    """

    def __init__(self, bucket: str, key: str, content_type: str) -> None:
        self.bucket, self.key, self.content_type = bucket, key, content_type
        self.buffer = bytearray(PART_BYTES)  # zeroed pages are only resident once written
        self.filled = 0
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        rest = memoryview(data)
        while rest:
            count = min(len(rest), PART_BYTES - self.filled)
            self.buffer[self.filled : self.filled + count] = rest[:count]
            self.filled += count
            rest = rest[count:]
            if self.filled == PART_BYTES:
                self._flush()

    def _staged(self) -> PartBody:
        return PartBody(memoryview(self.buffer)[: self.filled])

    def _flush(self) -> None:
        if self.upload_id is None:
            created = _s3().create_multipart_upload(Bucket=self.bucket, Key=self.key, ContentType=self.content_type)
            self.upload_id = created["UploadId"]
        number = len(self.parts) + 1
        with self._staged() as body:
            part = _s3().upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
            )
        self.parts.append({"ETag": part["ETag"], "PartNumber": number})
        self.filled = 0

    def commit(self) -> str | None:
        if self.upload_id is None:
            with self._staged() as body:
                result = _s3().put_object(Bucket=self.bucket, Key=self.key, Body=body, ContentType=self.content_type)
            return cast(str | None, result.get("VersionId"))
        if self.filled:
            self._flush()
        result = _s3().complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )
        return cast(str | None, result.get("VersionId"))

    def abort(self) -> None:
        """Drop what was staged. An abort S3 refuses is logged; the bucket's lifecycle rule removes the parts."""
        from botocore.exceptions import BotoCoreError, ClientError

        self.filled = 0
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is None:
            return
        try:
            _s3().abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
        except (BotoCoreError, ClientError) as error:
            logger.warning("multipart upload not aborted", extra={"s3_key": self.key, "error": type(error).__name__})


def object_key(record: FeedRecord) -> str:
    return f"feeds/{record.tenant_id}/{record.feed_id}/latest.{EXTENSIONS.get(record.format, 'dat')}"


def _session(settings: Settings, record: FeedRecord) -> Any:
    """The consumer client's sessions (the ClientLayer): this function calls feeds as other teams' functions do."""
    import oauth_connections_client as client

    trace_http()
    policy = client.UrlPolicy(allow_insecure_loopback=url_policy().allow_insecure_loopback)
    if record.connection_id:
        return client.AuthorizedSession(record.tenant_id, record.connection_id, policy=policy)
    return client.guarded_session(policy)


def fetch_feed(settings: Settings, record: FeedRecord) -> FetchOutcome:
    import requests
    from botocore.exceptions import BotoCoreError, ClientError

    import oauth_connections_client as client

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
    except client.UrlNotAllowedError as error:
        raise FetchFailed("url_not_allowed", error.message) from error
    except client.ConnectionNotFoundError as error:
        raise FetchFailed(
            "connection_not_found", "the feed's connection no longer exists: give the feed another one, or none"
        ) from error
    except client.TokenServiceError as error:
        code = "token_service_failed" if type(error) is client.TokenServiceError else error.code
        raise FetchFailed(code, f"no token for the feed's connection: {error.message}") from error
    except (BotoCoreError, ClientError) as error:  # invoking the token service itself failed
        raise FetchFailed("token_service_failed", f"the token service did not answer: {_aws_error(error)}") from error
    except client.UnsafeUrlError as error:
        raise FetchFailed("unsafe_url", error.message) from error
    except requests.TooManyRedirects as error:
        raise FetchFailed("too_many_redirects", "the feed redirects too often") from error
    except requests.Timeout as error:
        raise FetchFailed("timeout", "the feed server did not answer in time") from error
    except requests.ConnectionError as error:
        raise FetchFailed("unreachable", "feed connection failed") from error
    except requests.RequestException as error:
        raise FetchFailed("request_failed", f"the request failed: {type(error).__name__}") from error
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
    assert settings.feeds_bucket_name
    key = object_key(record)
    upload = StagedUpload(settings.feeds_bucket_name, key, CONTENT_TYPES.get(record.format, "application/octet-stream"))
    checker = checker_for(record.format)
    total = 0
    deadline = time.monotonic() + budget.bounded(settings.feed_max_seconds, reserve=RECORD_RESERVE_SECONDS)
    try:
        declared = response.headers.get("Content-Length")
        if (
            declared
            and declared.isascii()
            and declared.isdigit()
            and not response.headers.get("Content-Encoding")
            and (len(declared) > 18 or int(declared) > settings.feed_max_bytes)
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
    except FetchFailed:
        upload.abort()
        raise
    except Exception as error:  # every failure aborts the upload, then is named by _store_failure
        upload.abort()
        raise _store_failure(error) from error
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


def _store_failure(error: Exception) -> FetchFailed:
    import requests
    import urllib3.exceptions
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(error, FeedContentError):
        return FetchFailed("invalid_content", str(error)[:300], http_status=200)
    if isinstance(error, (BotoCoreError, ClientError)):
        return FetchFailed("storage_failed", f"the feed could not be stored: {_aws_error(error)}", http_status=200)
    if isinstance(error, (requests.RequestException, urllib3.exceptions.HTTPError, OSError)):
        if _is_timeout(error):
            return FetchFailed("timeout", "the feed server stopped sending", http_status=200)
        return FetchFailed("download_failed", f"the download broke off: {type(error).__name__}", http_status=200)
    return _unexpected(error, http_status=200)


def _unexpected(error: Exception, *, http_status: int | None = None) -> FetchFailed:
    """A failure nobody planned for: the run names its kind; the log has the trace (by run id)."""
    code = error.code if isinstance(error, ServiceError) else "internal_error"
    return FetchFailed(code, f"the run failed unexpectedly ({type(error).__name__})", http_status=http_status)


def _aws_error(error: Exception) -> str:
    """An AWS error's code (ClientError) or kind, never its message (which may name resources)."""
    response = getattr(error, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code or type(error).__name__)


def _is_timeout(error: BaseException) -> bool:
    import requests
    from urllib3.exceptions import ReadTimeoutError

    return isinstance(error, (requests.Timeout, ReadTimeoutError, TimeoutError)) or any(
        isinstance(arg, BaseException) and _is_timeout(arg) for arg in error.args
    )


def record_feed_run(settings: Settings, tenant_id: str, feed_id: str, trigger: str) -> str:
    """One fetch of a feed, recorded as a run; returns the run's status."""
    bind_table(settings.connections_table_name)
    try:
        record = FEEDS.load(tenant_id, feed_id, consistent=True)
    except NotFoundError:
        return "gone"
    if not record.enabled and trigger == "schedule":
        return "disabled"
    started = utcnow()
    clock = time.monotonic()
    run = FeedRunRecord(
        runs_key(tenant_id, feed_id),
        f"{RUN_PREFIX}{(run_id := new_id('run'))}",
        tenant_id=tenant_id,
        feed_id=feed_id,
        run_id=run_id,
        trigger=trigger,
        status="running",
        started_at=started,
        expires_at_epoch=started + timedelta(days=settings.feed_runs_kept_days),
    )
    save_run(run)
    context = {"tenant_id": tenant_id, "feed_id": feed_id, "run_id": run_id}
    actions: list[Any] = [FeedRecord.last_run_id.set(run_id), FeedRecord.last_run_at.set(started)]
    try:
        outcome = fetch_feed(settings, record)
    except Exception as error:  # noqa: BLE001 - the run records every failure; the message is done
        failure = error if isinstance(error, FetchFailed) else _unexpected(error)
        if failure is not error:
            logger.exception("feed run failed unexpectedly", extra=context)
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
                FeedRecord.last_good_key.set(outcome.s3_key or ""),
                FeedRecord.last_good_at.set(utcnow()),
                FeedRecord.etag.set(outcome.etag) if outcome.etag else FeedRecord.etag.remove(),
                FeedRecord.last_modified.set(outcome.last_modified)
                if outcome.last_modified
                else FeedRecord.last_modified.remove(),
            ]
            if outcome.s3_version:
                actions.append(FeedRecord.last_good_version.set(outcome.s3_version))
            if outcome.items is not None:
                actions.append(FeedRecord.last_items.set(outcome.items))
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
    save_run(run)
    if trigger != "schedule" or run.status == "failed":
        # A routine scheduled fetch is in the feed's runs; the log keeps the ones a user asked for and failures.
        activity.record_activity(
            settings,
            tenant_id,
            feed_id,
            "feed.run",
            actor=None,
            trigger="scheduled" if trigger == "schedule" else "on_demand",
            run_id=run_id,
            status=run.status,
            reason=run.error_code,
            items=run.items,
        )
    actions.append(FeedRecord.last_status.set(run.status))
    if run.error_code == "connection_not_found" and record.enabled:
        # The connection will not come back (ids are never reused): stop the schedule instead of failing forever.
        record.enabled = False
        actions += [
            FeedRecord.enabled.set(False),
            FeedRecord.next_run_at.remove(),
            FeedRecord.due_shard.remove(),
            FeedRecord.due_at.remove(),
        ]
        logger.info("feed schedule stopped: its connection no longer exists", extra=context)
    elif trigger == "manual" and record.enabled:
        schedule_next(settings, record, utcnow())
        actions += [
            FeedRecord.next_run_at.set(record.next_run_at),
            FeedRecord.due_shard.set(record.due_shard),
            FeedRecord.due_at.set(record.due_at),
        ]
    if not record_feed_outcome(record, actions):
        logger.info("feed deleted during its run", extra=context)
    return str(run.status)
