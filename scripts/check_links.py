#!/usr/bin/env python3
"""Check the links of a built HTML book (mdBook's output): every relative link and every
#anchor must resolve to a file of the book and an id in it. External links (http, https,
mailto, ...) are not fetched: CI has no network, and they are not the book's to keep.

    python3 scripts/check_links.py docs/book

Prints each broken link with the page it is on and exits 1 when there is one; exits 2 when the
directory holds no HTML at all (a book that did not build must not pass).
"""

import os
import sys
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

# The attributes that name another resource, by tag.
LINKING = {"a": "href", "link": "href", "script": "src", "img": "src", "iframe": "src"}


class Page(HTMLParser):
    """The ids a page defines and the links it makes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids = set()
        self.links = []
        self.base = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(name):
                self.ids.add(attrs[name])
        if tag == "base" and attrs.get("href"):
            self.base = attrs["href"]
        target = attrs.get(LINKING.get(tag, ""))
        if target is not None:
            self.links.append(target)

    handle_startendtag = handle_starttag


def external(link):
    parts = urlsplit(link)
    return bool(parts.scheme) or link.startswith("//")


def read_pages(root):
    pages = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".html"):
                path = os.path.normpath(os.path.join(folder, name))
                page = Page()
                with open(path, encoding="utf-8") as f:
                    page.feed(f.read())
                pages[path] = page
    return pages


def resolve(root, page_path, page, link):
    """The file a relative link points at (normalised) and its fragment."""
    parts = urlsplit(link)
    folder = os.path.dirname(page_path)
    if page.base and page.base.startswith("/"):
        # mdBook's 404 page: links are relative to the site's root.
        folder = os.path.join(root, page.base.lstrip("/"))
    if not parts.path:
        target = page_path
    else:
        target = os.path.normpath(os.path.join(folder, unquote(parts.path)))
        if os.path.isdir(target):
            target = os.path.join(target, "index.html")
    return target, unquote(parts.fragment)


def broken_links(root):
    root = os.path.normpath(root)
    pages = read_pages(root)
    broken = []
    for path, page in sorted(pages.items()):
        for link in page.links:
            if not link or external(link):
                continue
            target, fragment = resolve(root, path, page, link)
            where = os.path.relpath(path, root)
            if not os.path.exists(target):
                broken.append(f"{where}: {link}: no file {os.path.relpath(target, root)}")
            elif not os.path.realpath(target).startswith(os.path.realpath(root) + os.sep):
                broken.append(f"{where}: {link}: outside the book")
            elif fragment and target in pages and fragment not in pages[target].ids:
                broken.append(f"{where}: {link}: no #{fragment} in {os.path.relpath(target, root)}")
    return pages, broken


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    pages, broken = broken_links(argv[1])
    if not pages:
        print(f"{argv[1]}: no HTML pages (was the book built?)", file=sys.stderr)
        return 2
    for line in broken:
        print(f"broken link: {line}", file=sys.stderr)
    links = sum(len(p.links) for p in pages.values())
    print(f"{len(pages)} pages, {links} links, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
