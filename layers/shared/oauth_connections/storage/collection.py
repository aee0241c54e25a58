"""The shape every tenant-owned collection shares (connections, feeds): items at pk=TENANT#<tenant>,
sk=<kind prefix><id>, made with their tenant, id and creation time, paged in creation order with the id to
continue after, loaded for a tenant, inserted once, saved and deleted under the version read, and edited
by a tenant under the version of their settings (the ETag)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UTCDateTimeAttribute, VersionAttribute
from pynamodb.exceptions import DeleteError, PutError

from oauth_connections.core.clock import utcnow
from oauth_connections.core.errors import ConflictError, NotFoundError, PreconditionFailedError
from oauth_connections.core.ids import is_id
from oauth_connections.core.pagination import decode_cursor_of, encode_cursor
from oauth_connections.storage.table import TableModel, condition_failed, tenant_key

EDIT_ATTEMPTS = 3


class TenantItem(TableModel):
    """Base of a collection's items: their tenant (also in the key), when created and last changed, the
    version every save checks, and the version of the tenant's settings."""

    tenant_id = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    version = VersionAttribute()
    # The ETag: moves only when the tenant edits the settings, never on the service's own writes (token
    # writes, leases, status, a feed's runs and schedule), which move only `version`.
    settings_version = NumberAttribute(default=1)


class DueItem(TenantItem):
    """A collection item that has work due now and then: while it has, it sits in the sparse DueIndex under
    `due_shard`, by `due_at` (each model holds its own DueIndex instance, bound to it)."""

    due_shard = UnicodeAttribute(null=True)
    due_at = UTCDateTimeAttribute(null=True)


class Collection[T: TenantItem]:
    """A tenant's items of one kind. `noun` names the kind in errors ("connection not found") and the
    attribute that holds an item's id (`connection_id`)."""

    def __init__(self, model: type[T], sort_prefix: str, id_prefix: str, noun: str) -> None:
        self.model, self.sort_prefix, self.id_prefix, self.noun = model, sort_prefix, id_prefix, noun

    def key(self, tenant_id: str, item_id: str) -> tuple[str, str]:
        return tenant_key(tenant_id), f"{self.sort_prefix}{item_id}"

    def new(self, tenant_id: str, item_id: str, **attributes: Any) -> T:
        """A new item of the tenant, created now; not written until inserted."""
        now = utcnow()
        identity: dict[str, Any] = {f"{self.noun}_id": item_id, "created_at": now, "updated_at": now}
        hash_key, range_key = self.key(tenant_id, item_id)
        return self.model(hash_key, range_key, tenant_id=tenant_id, **identity, **attributes)

    def load(self, tenant_id: str, item_id: str, *, consistent: bool = False) -> T:
        try:
            return self.model.get(*self.key(tenant_id, item_id), consistent_read=consistent)
        except self.model.DoesNotExist as error:
            raise NotFoundError(f"{self.noun} not found") from error

    def load_requested(self, tenant_id: str, item_id: str) -> T:
        """The tenant's item a request names; an id of another kind is not found without a read."""
        if not is_id(item_id, self.id_prefix):
            raise NotFoundError(f"{self.noun} not found")
        return self.load(tenant_id, item_id)

    def page(self, tenant_id: str, limit: int, cursor: str | None) -> tuple[list[T], str | None]:
        """One page of the tenant's items in creation order after the cursor, and the next page's cursor (or None).

        The query asks for one item more than a page: DynamoDB returns a LastEvaluatedKey whenever a page is
        full, even when nothing follows.
        """
        after_id = decode_cursor_of(cursor, self.id_prefix) if cursor else None
        pk = tenant_key(tenant_id)
        start = {"pk": {"S": pk}, "sk": {"S": f"{self.sort_prefix}{after_id}"}} if after_id else None
        result = self.model.query(
            pk,
            self.model.sk.startswith(self.sort_prefix),
            limit=limit + 1,
            last_evaluated_key=start,
            page_size=limit + 1,
        )
        items = list(result)
        more = len(items) > limit
        return items[:limit], encode_cursor(items[limit - 1].sk.removeprefix(self.sort_prefix)) if more else None

    def insert(self, record: T) -> None:
        record.save(condition=self.model.pk.does_not_exist())

    def stale(self) -> ConflictError:
        return ConflictError(f"the {self.noun} was changed concurrently", code="stale_update")

    def save(self, record: T) -> None:
        """Write back a changed item, refused if another writer changed it first (version check)."""
        record.updated_at = utcnow()
        with self._refused_as_stale():
            record.save()

    def edit(
        self,
        record: T,
        change: Callable[[T], None],
        if_match: int | None,
        save: Callable[[T], None] | None = None,
    ) -> T:
        """A tenant's edit: `change` the record, move its settings version and save it (`save`, or `save`).

        With `if_match`, settings changed since that version are refused (412 stale_update). A save refused
        because another writer changed the item first loads it again and applies the change on top: the
        service's own writes leave the settings alone, so they never fail an edit. `change` refuses by
        raising (a broken rule); the record it got is the one saved."""
        write = save or self.save
        for attempt in range(EDIT_ATTEMPTS):
            if if_match is not None and if_match != int(record.settings_version or 1):
                raise PreconditionFailedError(f"the {self.noun} has changed since it was read", code="stale_update")
            change(record)
            record.settings_version = int(record.settings_version or 1) + 1
            try:
                write(record)
                return record
            except ConflictError as error:
                if error.code != "stale_update" or attempt == EDIT_ATTEMPTS - 1:
                    raise
                record = self.load(record.tenant_id, getattr(record, f"{self.noun}_id"), consistent=True)
        raise AssertionError("the last attempt returns or raises")

    def delete(self, record: T) -> None:
        with self._refused_as_stale():
            record.delete()

    @contextmanager
    def _refused_as_stale(self) -> Iterator[None]:
        """A write its version check refused is a concurrent change: ConflictError stale_update."""
        try:
            yield
        except (PutError, DeleteError) as error:
            if condition_failed(error):
                raise self.stale() from error
            raise
