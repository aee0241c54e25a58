"""Records become API views by one rule: a view's field takes the record's attribute of the same name.

Each caller names only what differs (the id's own name, a converted or derived value), so a new field of
a view and its record needs no copying line, and a view never shows an attribute it does not declare.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def view_of[V: BaseModel](view: type[V], record: object, **values: Any) -> V:
    """The view of a stored record: `values` for the fields they name, the same-named attribute for the rest."""
    copied = {name: getattr(record, name) for name in view.model_fields if name not in values}
    return view(**copied, **values)
