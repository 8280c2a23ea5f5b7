"""Parsing appc discovery ``<meta>`` tags out of an HTML page.

appc discovery pages carry tags like::

    <meta name="ac-discovery" content="PREFIX URL-TEMPLATE">
    <meta name="ac-discovery-pubkeys" content="PREFIX URL">

:func:`parse_meta` returns every such tag in document order. It uses the stdlib
``html.parser`` so arbitrary markup is fine: attributes in any order, any case,
quoted or not, ``<meta …/>``, tags outside ``<head>``, character references in
the content (``&amp;``). As with a browser (and appc's Go tokenizer), text in
comments, ``<script>`` and ``<style>`` is not markup, so a tag written there does
not count. A ``content`` that is not exactly two whitespace-separated fields is
ignored (appc's reference code splits at the first space only; a URL never
contains blanks). Any other ``ac-*`` meta name is returned too and left to the
caller; unrelated meta tags are skipped. The parser never raises on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser

DISCOVERY = "ac-discovery"
PUBKEYS = "ac-discovery-pubkeys"


@dataclass(frozen=True)
class MetaTag:
    """One ``ac-*`` meta tag: its name, the name prefix it applies to, its URL (template)."""

    name: str
    prefix: str
    uri: str

    def matches(self, name: str) -> bool:
        """appc's rule: the tag applies when the image name starts with the prefix."""
        return name.startswith(self.prefix)


class _MetaParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[MetaTag] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag.lower() != "meta":
            return
        fields = {k.lower(): v for k, v in attrs if v is not None}
        name = (fields.get("name") or "").strip().lower()
        if not name.startswith("ac-"):
            return
        parts = (fields.get("content") or "").split()
        if len(parts) != 2:
            return
        self.tags.append(MetaTag(name, parts[0], parts[1]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def parse_meta(page: bytes | str) -> list[MetaTag]:
    """Every ``ac-*`` meta tag of ``page`` (bytes are read as UTF-8), in document order."""
    text = page.decode("utf-8", "replace") if isinstance(page, bytes) else page
    parser = _MetaParser()
    try:
        parser.feed(text)
        parser.close()
    except Exception:  # noqa: BLE001 - html.parser may choke on hostile input; keep what we got
        pass
    return parser.tags
