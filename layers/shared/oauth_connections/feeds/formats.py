"""Incremental checks of a feed's content while it streams: nothing holds the whole body in memory.

Each checker takes the decoded body chunk by chunk and, at the end, says whether the content is what
the feed's format promises, and how many items (offers, rows, elements) it holds.
"""

from __future__ import annotations

import codecs
import csv
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Protocol, cast


class FeedContentError(ValueError):
    """The body is not valid content of the feed's format."""


class ContentChecker(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> int | None:
        """The number of items, after checking the end of the content; raises FeedContentError."""
        ...


class XmlChecker:
    """Well-formed XML; for the YML catalog format also the yml_catalog/shop/offers structure, counting offers."""

    def __init__(self, *, yml: bool) -> None:
        self.yml = yml
        self.parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
        self.path: list[str] = []
        self.elements: list[ET.Element] = []
        self.offers = 0
        self.seen_offers_list = False
        self.root: str | None = None

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.feed(chunk)
            self._drain()
        except ET.ParseError as error:
            raise FeedContentError(f"malformed XML: {error}") from error

    def _drain(self) -> None:
        for event, element in cast(Iterator[tuple[str, ET.Element]], self.parser.read_events()):
            if event == "start":
                tag = element.tag
                if self.root is None:
                    self.root = tag
                    if self.yml and tag != "yml_catalog":
                        raise FeedContentError(f"a YML catalog's root element is yml_catalog, not {tag}")
                self.path.append(tag)
                self.elements.append(element)
                if self.path == ["yml_catalog", "shop", "offers"]:
                    self.seen_offers_list = True
                continue
            if self.path[:3] == ["yml_catalog", "shop", "offers"] and len(self.path) == 4 and element.tag == "offer":
                self.offers += 1
            self.path.pop()
            self.elements.pop()
            # Keep memory flat: a finished element is dropped from its parent. Elements end in document
            # order, so it is the parent's first child left; the ones after it that the same chunk built
            # are already attached, so it is not the last.
            element.clear()
            if self.elements and len(self.elements[-1]) and self.elements[-1][0] is element:
                del self.elements[-1][0]

    def finish(self) -> int | None:
        try:
            self.parser.close()
            self._drain()
        except ET.ParseError as error:
            raise FeedContentError(f"malformed XML: {error}") from error
        if self.root is None:
            raise FeedContentError("the body holds no XML element")
        if self.yml:
            if not self.seen_offers_list:
                raise FeedContentError("a YML catalog needs yml_catalog/shop/offers")
            return self.offers
        return None


class CsvChecker:
    """UTF-8 CSV: counts the data rows after the header; refuses malformed quoting and ragged rows."""

    def __init__(self) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
        self.pending = ""
        self.rows = 0
        self.width: int | None = None

    def _consume(self, text: str, final: bool) -> None:
        data = self.pending + text
        if not final:
            cut = data.rfind("\n")
            if cut < 0:
                self.pending = data
                return
            data, self.pending = data[: cut + 1], data[cut + 1 :]
        else:
            self.pending = ""
        if data.count('"') % 2 and not final:  # a quoted field spans the cut: wait for more
            self.pending = data + self.pending
            return
        try:
            for row in csv.reader(data.splitlines()):
                if not row:
                    continue
                if self.width is None:
                    self.width = len(row)
                elif len(row) != self.width:
                    raise FeedContentError(f"row {self.rows + 2} has {len(row)} fields, the header {self.width}")
                else:
                    self.rows += 1
        except csv.Error as error:
            raise FeedContentError(f"malformed CSV: {error}") from error

    def feed(self, chunk: bytes) -> None:
        try:
            self._consume(self.decoder.decode(chunk), final=False)
        except UnicodeDecodeError as error:
            raise FeedContentError("CSV is not UTF-8") from error

    def finish(self) -> int | None:
        try:
            self._consume(self.decoder.decode(b"", final=True), final=True)
        except UnicodeDecodeError as error:
            raise FeedContentError("CSV is not UTF-8") from error
        if self.width is None:
            raise FeedContentError("the CSV has no header")
        return self.rows


class JsonChecker:
    """Structure of a JSON document (balanced, strings closed, one top-level value), counting the
    elements of a top-level array; scalars inside are not parsed, so memory stays flat."""

    def __init__(self) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self.stack: list[str] = []
        self.in_string = False
        self.escaped = False
        self.started = False
        self.closed = False
        self.items = 0
        self.pending_item = False
        self.root: str | None = None

    def feed(self, chunk: bytes) -> None:
        try:
            text = self.decoder.decode(chunk)
        except UnicodeDecodeError as error:
            raise FeedContentError("JSON is not UTF-8") from error
        for char in text:
            self._step(char)

    def _step(self, char: str) -> None:
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = False
            return
        if char in " \t\r\n":
            return
        if self.closed:
            raise FeedContentError("data after the end of the JSON document")
        if len(self.stack) == 1 and self.stack[0] == "[" and char not in ",]" and not self.pending_item:
            self.pending_item = True
            self.items += 1
        if char == ",":
            self.pending_item = False
        self.started = True
        if char == '"':
            self.in_string = True
        elif char in "[{":
            if self.root is None:
                self.root = char
            self.stack.append(char)
        elif char in "]}":
            if not self.stack or {"]": "[", "}": "{"}[char] != self.stack.pop():
                raise FeedContentError("unbalanced JSON brackets")
            if not self.stack:
                self.closed = True
        elif not self.stack and char not in "-0123456789.eE+truefalsn":
            raise FeedContentError("invalid JSON value")

    def finish(self) -> int | None:
        if self.in_string or self.stack or not self.started:
            raise FeedContentError("the JSON document is incomplete")
        return self.items if self.root == "[" else None


def checker_for(feed_format: str) -> ContentChecker:
    if feed_format in ("yml", "xml"):
        return XmlChecker(yml=feed_format == "yml")
    if feed_format == "csv":
        return CsvChecker()
    return JsonChecker()
