#!/usr/bin/env python3
"""Checks the internal links of the rendered book: every page and anchor they point to exists.

Usage: scripts/check_book_links.py [BOOK_HTML_DIR] (default: book/book, what `mdbook build book`
writes). Reads every `.html` file, and for each `href` or `src` that is not external (no scheme,
not `//host`), checks that the file it names exists and, for a `#fragment`, that the page holds
an element with that `id` (`404.html` links to the site's root and is left out). Prints each broken link with the page it is on, and exits non-zero
if there is any.
"""

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent


class Page(HTMLParser):
    """The links and the ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list = []
        self.ids: set = set()

    def handle_starttag(self, tag, attrs) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            elif name == "href" or (name == "src" and tag in ("img", "script")):
                self.links.append(value)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def main() -> None:
    book = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "book" / "book"
    if not (book / "index.html").is_file():
        print(f"check_book_links: no rendered book at {book}", file=sys.stderr)
        sys.exit(1)
    pages = {path.resolve(): parse(path) for path in sorted(book.rglob("*.html"))}
    broken = []
    checked = 0
    for path, page in pages.items():
        if path.name == "404.html":
            continue  # written for the site's root (`/`), wherever it is served from
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith("javascript:"):
                continue  # external: not this book's business
            checked += 1
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(book.resolve())}: {link} (no {target.name})")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if fragment not in ids:
                    broken.append(f"{path.relative_to(book.resolve())}: {link} (no #{fragment})")
    for line in broken:
        print(f"broken link: {line}", file=sys.stderr)
    if broken:
        sys.exit(1)
    print(f"    {checked} internal links in {len(pages)} pages: all resolve")


if __name__ == "__main__":
    main()
