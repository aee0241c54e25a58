"""Request and response models of the feeds API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from oauth_connections.connections.models import Name, SafeUrl, StrictModel


def _cron(value: str) -> str:
    from oauth_connections.feeds.cron import Cron, CronError

    try:
        Cron.parse(value)
    except CronError as error:
        raise PydanticCustomError("invalid_cron", str(error)) from error
    return value


type FeedFormat = Literal["yml", "xml", "csv", "json"]
type FeedRunStatus = Literal["running", "succeeded", "not_modified", "failed"]


RateMinutes = Annotated[int, Field(ge=5, le=10_080, description="Every N minutes (at least 5)")]
CronExpression = Annotated[
    str, StringConstraints(min_length=9, max_length=100), AfterValidator(_cron), Field(description="Cron, UTC")
]
FeedSchedule = RateMinutes | CronExpression
ConnectionRef = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class FeedSettings(StrictModel):
    name: Name
    url: SafeUrl
    connection_id: ConnectionRef | None = Field(
        default=None, description="The tenant's connection whose token protects the feed; none for a public feed"
    )
    schedule: FeedSchedule = 60
    format: FeedFormat = "yml"
    enabled: bool = True


class FeedCreate(FeedSettings):
    pass


class FeedUpdate(StrictModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"minProperties": 1})

    name: Name | SkipJsonSchema[None] = None
    url: SafeUrl | SkipJsonSchema[None] = None
    connection_id: ConnectionRef | None = None
    schedule: FeedSchedule | SkipJsonSchema[None] = None
    format: FeedFormat | SkipJsonSchema[None] = None
    enabled: bool | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _required_fields_not_null(self) -> FeedUpdate:
        nulled = sorted(f for f in self.model_fields_set - {"connection_id"} if getattr(self, f) is None)
        if nulled:
            raise ValueError(f"fields cannot be null: {', '.join(nulled)}")
        if not self.model_fields_set:
            raise ValueError("no field to update")
        return self


class FeedOut(BaseModel):
    id: str
    name: str
    url: str
    connection_id: str | None
    schedule: int | str
    format: FeedFormat
    enabled: bool
    next_run_at: datetime | None
    last_status: FeedRunStatus | None = None
    last_run_at: datetime | None = None
    last_good_at: datetime | None = None
    last_items: int | None = Field(default=None, description="Offers (YML), rows (CSV) or array items (JSON)")
    created_at: datetime
    updated_at: datetime
    version: int


class FeedPage(BaseModel):
    items: list[FeedOut]
    next_cursor: str | None


class FeedRunOut(BaseModel):
    id: str
    trigger: str
    status: FeedRunStatus
    http_status: int | None
    bytes: int
    items: int | None
    duration_ms: int | None
    s3_key: str | None
    s3_version: str | None
    error_code: str | None
    error_message: str | None
    started_at: datetime
    finished_at: datetime | None


class FeedRunList(BaseModel):
    items: list[FeedRunOut]


class FeedRunQueued(BaseModel):
    status: Literal["queued"] = "queued"
