"""The shape every tenant-owned collection shares (connections, feeds): items at pk=TENANT#<tenant>,
sk=<kind prefix><id>, made with their tenant, id and creation time, paged in creation order with the id to
continue after, loaded for a tenant, inserted once, saved and deleted under the version read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pynamodb.attributes import UnicodeAttribute, UTCDateTimeAttribute, VersionAttribute
from pynamodb.exceptions import DeleteError, PutError

from oauth_connections.core.clock import utcnow
from oauth_connections.core.errors import ConflictError, NotFoundError
from oauth_connections.core.ids import is_id
from oauth_connections.core.pagination import decode_cursor_of, encode_cursor
from oauth_connections.storage.table import TableModel, condition_failed, tenant_key


class TenantItem(TableModel):
    """Base of a collection's items: their tenant (also in the key), when created and last changed, and the
    version every save checks."""

    tenant_id = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    version = VersionAttribute()


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
