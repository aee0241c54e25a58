"""Configuration: one validated settings model, parsed once per execution environment."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from oauth_connections.core.errors import ConfigurationError


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    stage: str = "dev"
    connections_table_name: str = Field(min_length=1)
    encryption_key_arn: str | None = None
    tenant_claim: str = "tenant_id"
    # The JWT claim that names the user acting, for the activity log.
    user_claim: str = Field(default="sub", min_length=1)
    public_base_url: str | None = None
    # Local stack only: plain http to loopback for provider URLs. Never set in the template.
    allow_insecure_loopback_urls: bool = False
    aws_region: str = "eu-central-1"
    max_body_bytes: int = 64 * 1024
    # The overall deadline of one provider call (connect and the whole response); a refresh shortens it
    # further to end within its lease and the invocation's remaining time.
    outbound_timeout_seconds: float = Field(default=8.0, gt=0)
    # AWS calls (DynamoDB, KMS, SQS, EventBridge, S3): connect and read timeout of one attempt, and
    # attempts per call in the standard retry mode; aws.py also keeps them inside the invocation's time.
    aws_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    aws_max_attempts: int = Field(default=2, ge=1, le=10)
    # Origins the frontend may ask to return to after authorization: "https://app.example.com",
    # "http://127.0.0.1:*" (any port). Comma-separated in the environment.
    allowed_return_origins: tuple[str, ...] = ()
    event_bus_name: str = "default"
    # The scopes API Gateway requires of bearer tokens (template Parameters), for the OpenAPI document.
    require_scopes: bool = True
    read_scope: str = Field(default="connections:read", min_length=1)
    manage_scope: str = Field(default="connections:manage", min_length=1)
    # Token refresh (shared by on-demand retrieval and the scheduled refresh).
    refresh_lease_seconds: int = Field(default=30, ge=5, le=300)
    refresh_wait_seconds: float = Field(default=12.0, ge=0, le=60)
    force_refresh_min_interval_seconds: int = Field(default=30, ge=0, le=3600)
    backoff_base_seconds: int = Field(default=30, ge=1)
    backoff_max_seconds: int = Field(default=3600, ge=1)
    error_after_seconds: int = Field(default=86_400, ge=60)
    publish_refreshed_events: bool = False
    # Scheduled refresh.
    refresh_window_minutes: int = Field(default=15, ge=1)
    keepalive_hours: int = Field(default=24, ge=1)
    due_shards: int = Field(default=16, ge=1, le=256)
    refresh_queue_url: str | None = None
    # Messages of one batch the refresh worker refreshes at once (each mostly waits for its provider); at
    # most the RefreshQueue mapping's batch size (template.yaml), so a whole batch waits for its providers once.
    refresh_batch_concurrency: int = Field(default=25, ge=1, le=25)
    # Feeds.
    feeds_bucket_name: str | None = None
    feed_queue_url: str | None = None
    feed_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    feed_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    feed_read_timeout_seconds: float = Field(default=30.0, gt=0)
    feed_max_seconds: float = Field(default=240.0, gt=0)
    feed_runs_kept_days: int = Field(default=90, ge=1)
    # Activity log: days an entry is kept before the table's TTL removes it.
    activity_retention_days: int = Field(default=180, ge=1, le=3650)

    @field_validator("allowed_return_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip().rstrip("/") for v in value.split(",") if v.strip())
        return value

    @property
    def cookie_secure(self) -> bool:
        """Secure cookies everywhere but the local stack's plain-http loopback API."""
        return not (self.public_base_url or "").startswith("http://")

    @field_validator(
        "public_base_url",
        "encryption_key_arn",
        "refresh_queue_url",
        "feeds_bucket_name",
        "feed_queue_url",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return value or None

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value


_ENV_NAMES = {
    "stage": "STAGE",
    "connections_table_name": "CONNECTIONS_TABLE_NAME",
    "encryption_key_arn": "ENCRYPTION_KEY_ARN",
    "tenant_claim": "TENANT_CLAIM",
    "user_claim": "USER_CLAIM",
    "public_base_url": "PUBLIC_BASE_URL",
    "allow_insecure_loopback_urls": "ALLOW_INSECURE_LOOPBACK_URLS",
    "aws_region": "AWS_REGION",
    "max_body_bytes": "MAX_BODY_BYTES",
    "outbound_timeout_seconds": "OUTBOUND_TIMEOUT_SECONDS",
    "aws_timeout_seconds": "AWS_TIMEOUT_SECONDS",
    "aws_max_attempts": "AWS_MAX_ATTEMPTS",
    "allowed_return_origins": "ALLOWED_RETURN_ORIGINS",
    "event_bus_name": "EVENT_BUS_NAME",
    "require_scopes": "REQUIRE_SCOPES",
    "read_scope": "READ_SCOPE",
    "manage_scope": "MANAGE_SCOPE",
    "refresh_lease_seconds": "REFRESH_LEASE_SECONDS",
    "refresh_wait_seconds": "REFRESH_WAIT_SECONDS",
    "force_refresh_min_interval_seconds": "FORCE_REFRESH_MIN_INTERVAL_SECONDS",
    "backoff_base_seconds": "BACKOFF_BASE_SECONDS",
    "backoff_max_seconds": "BACKOFF_MAX_SECONDS",
    "error_after_seconds": "ERROR_AFTER_SECONDS",
    "publish_refreshed_events": "PUBLISH_REFRESHED_EVENTS",
    "refresh_window_minutes": "REFRESH_WINDOW_MINUTES",
    "keepalive_hours": "KEEPALIVE_HOURS",
    "due_shards": "DUE_SHARDS",
    "refresh_queue_url": "REFRESH_QUEUE_URL",
    "refresh_batch_concurrency": "REFRESH_BATCH_CONCURRENCY",
    "feeds_bucket_name": "FEEDS_BUCKET_NAME",
    "feed_queue_url": "FEED_QUEUE_URL",
    "feed_max_bytes": "FEED_MAX_BYTES",
    "feed_connect_timeout_seconds": "FEED_CONNECT_TIMEOUT_SECONDS",
    "feed_read_timeout_seconds": "FEED_READ_TIMEOUT_SECONDS",
    "feed_max_seconds": "FEED_MAX_SECONDS",
    "feed_runs_kept_days": "FEED_RUNS_KEPT_DAYS",
    "activity_retention_days": "ACTIVITY_RETENTION_DAYS",
}


def load_settings(environ: dict[str, str] | os._Environ[str] = os.environ) -> Settings:
    values = {field: environ[name] for field, name in _ENV_NAMES.items() if name in environ}
    try:
        return Settings.model_validate(values)
    except ValidationError as error:
        raise ConfigurationError(f"invalid configuration: {error}") from error


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this execution environment; read on first use, not at import time."""
    return load_settings()
