#!/usr/bin/env python3
"""Turns the English HTML of a few Debian documentation packages into the qgate text corpus.

Run by scripts/fetch_corpus.sh after it has `dpkg -x`-ed every package named in SOURCES into one
folder. Standard library only (html.parser), so it runs before any virtual environment exists.

Output: calib.txt and eval.txt (plain-text paragraphs separated by one blank line) and
MANIFEST.tsv (which document went where, with its paragraph and byte counts). The split is by
whole document, never by interleaved lines, so the evaluation text is unseen prose rather than
the neighbours of calibration sentences; and a paragraph that occurs in both halves (boilerplate
repeated across books) is kept only in calib, so the two files share no paragraph.

docs/CORPUS.md documents the sources, the split and the checksums; keep it in step with SOURCES.
"""
from __future__ import annotations

import argparse
import html.parser
import pathlib
import re
import sys
from dataclasses import dataclass, field

CALIB = "calib"
EVAL = "eval"


@dataclass(frozen=True)
class Source:
    package: str
    version: str
    doc_dir: str  # relative to the extraction root
    index: str  # the file whose links give the reading order
    # Files linked from the index that are not prose chapters (single-page duplicates, search
    # pages, generated indexes).
    exclude: tuple[str, ...] = ()
    # How documents are grouped into split units. "chapter": a link whose name does not start
    # with "sect." opens a new unit and the "sect.*" pages after it belong to it (Publican's
    # chunking in the Debian Administrator's Handbook). "package": the whole book is one unit.
    grouping: str = "package"
    # Unit name -> split; units not named take `default_split`.
    splits: dict[str, str] = field(default_factory=dict)
    default_split: str = CALIB


# Reading order of the sources is the order of this tuple; the eval units are chosen so that
# eval.txt holds roughly 30% of the text (see docs/CORPUS.md for the resulting sizes).
SOURCES: tuple[Source, ...] = (
    Source(
        package="debian-handbook",
        version="11.20220922",
        doc_dir="usr/share/doc/debian-handbook/html/en-US",
        index="index.html",
        grouping="chapter",
        splits={
            # Whole chapters held out for evaluation: a mix of narrative (project, case study)
            # and administration prose so that eval covers the same registers as calib.
            "the-debian-project.html": EVAL,
            "installation.html": EVAL,
            "unix-services.html": EVAL,
            "security.html": EVAL,
            "derivative-distributions.html": EVAL,
        },
    ),
    Source(
        package="developers-reference",
        version="12.18",
        doc_dir="usr/share/developers-reference",
        index="index.html",
        exclude=("developers-reference.html", "search.html", "genindex.html"),
    ),
    Source(
        package="debian-policy",
        version="4.6.2.0",
        doc_dir="usr/share/doc/debian-policy/policy.html",
        index="index.html",
        exclude=("search.html", "genindex.html"),
        default_split=EVAL,
    ),
    Source(
        package="debian-reference-en",
        version="2.100",
        doc_dir="usr/share/debian-reference",
        index="index.en.html",
        default_split=EVAL,
    ),
    Source(
        package="harden-doc",
        version="3.19+nmu1",
        doc_dir="usr/share/doc/harden-doc/html/en-US",
        index="index.html",
    ),
    Source(
        package="debian-faq",
        version="11.1",
        doc_dir="usr/share/doc/debian/FAQ",
        index="index.en.html",
        default_split=EVAL,
    ),
    Source(
        package="maint-guide",
        version="1.2.53",
        doc_dir="usr/share/doc/maint-guide/html",
        index="index.en.html",
        default_split=EVAL,
    ),
    Source(
        package="gimp-help-en",
        version="2.10.34-2",
        doc_dir="usr/share/gimp/2.0/help/en",
        index="index.html",
        # The GFDL's own text is legal boilerplate, not the manual's prose.
        exclude=tuple(f"gfdl-{i}.html" for i in range(1, 11)) + ("gfdl-addendum.html",),
    ),
)

# Elements whose whole subtree is dropped: code, tables, page furniture and headings (headings
# are short lines, not prose).
SKIP_TAGS = frozenset(
    {"head", "script", "style", "pre", "table", "h1", "h2", "h3", "h4", "h5", "h6", "nav",
     "footer", "header", "form", "svg", "math", "button", "select", "textarea"}
)
# Navigation, tables of contents and link-only blocks of the HTML generators used above
# (Publican, DocBook XSL, Sphinx).
SKIP_CLASSES = frozenset(
    {"docnav", "navheader", "navfooter", "toc", "titlepage", "title", "url", "related",
     "sphinxsidebar", "sphinxsidebarwrapper", "footer", "highlight", "headerlink", "index",
     "list-of-tables", "list-of-figures", "list-of-examples", "screen", "programlisting",
     "literallayout", "synopsis", "cmdsynopsis", "legalnotice", "revhistory", "mediaobject",
     "figure"}
)
# Elements that end the current paragraph.
BLOCK_TAGS = frozenset(
    {"p", "div", "li", "ul", "ol", "dl", "dd", "dt", "blockquote", "br", "hr", "section",
     "article", "aside", "main", "body", "tr", "td", "th", "caption", "title", "figure"}
)
VOID_TAGS = frozenset(
    {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source",
     "track", "wbr", "param"}
)

MIN_WORDS = 8  # shorter blocks are labels, captions, menu items or leftover headings
MIN_LETTER_RATIO = 0.6  # below this a block is mostly paths, numbers or punctuation

_SPACE = re.compile(r"\s+")


class _ParagraphExtractor(html.parser.HTMLParser):
    """Collects the text of block-level elements as paragraphs, skipping SKIP_* subtrees."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._buf: list[str] = []
        # Open elements as (tag, skipped); popping to a matching tag copes with the unclosed <p>
        # and <li> that non-XHTML generators emit.
        self._stack: list[tuple[str, bool]] = []

    def _skipping(self) -> bool:
        return bool(self._stack) and self._stack[-1][1]

    def _flush(self) -> None:
        text = _SPACE.sub(" ", "".join(self._buf)).strip()
        self._buf.clear()
        if text:
            self.paragraphs.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in BLOCK_TAGS and not self._skipping():
            self._flush()
        if tag in VOID_TAGS:
            return
        classes = set((dict(attrs).get("class") or "").split())
        skip = self._skipping() or tag in SKIP_TAGS or bool(classes & SKIP_CLASSES)
        self._stack.append((tag, skip))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in BLOCK_TAGS and not self._skipping():
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if not any(t == tag for t, _ in self._stack):
            return  # stray end tag
        while self._stack:
            t, _ = self._stack.pop()
            if t == tag:
                break
        if tag in BLOCK_TAGS and not self._skipping():
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skipping():
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def is_prose(text: str) -> bool:
    words = text.split()
    if len(words) < MIN_WORDS:
        return False
    letters = sum(c.isalpha() for c in text)
    non_space = sum(not c.isspace() for c in text)
    return letters >= MIN_LETTER_RATIO * non_space


def html_paragraphs(path: pathlib.Path) -> list[str]:
    parser = _ParagraphExtractor()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return [p for p in parser.paragraphs if is_prose(p)]


_HREF = re.compile(r'href="([^"#?:]+\.html)[#"]')


def reading_order(src: Source, root: pathlib.Path) -> list[str]:
    """Local pages in the order the index first links them, excluding the index itself."""
    doc_dir = root / src.doc_dir
    index = doc_dir / src.index
    if not index.is_file():
        raise SystemExit(f"corpus_to_text: {src.package}: index {index} not found")
    order: list[str] = []
    for name in _HREF.findall(index.read_text(encoding="utf-8")):
        if "/" in name or name == src.index or name in src.exclude or name in order:
            continue
        if (doc_dir / name).is_file():
            order.append(name)
    if not order:
        raise SystemExit(f"corpus_to_text: {src.package}: no chapters linked from {index}")
    return order


def split_units(src: Source, pages: list[str]) -> list[tuple[str, list[str]]]:
    if src.grouping == "package":
        return [(src.package, pages)]
    units: list[tuple[str, list[str]]] = []
    for page in pages:
        if not page.startswith("sect.") or not units:
            units.append((page, []))
        units[-1][1].append(page)
    return units


def build(root: pathlib.Path, out_dir: pathlib.Path) -> None:
    # (split, package, unit, pages) in reading order.
    plan: list[tuple[str, str, str, list[str]]] = []
    for src in SOURCES:
        units = split_units(src, reading_order(src, root))
        names = {u for u, _ in units}
        unknown = set(src.splits) - names
        if unknown:
            # A split entry that names nothing would silently move text between the halves.
            raise SystemExit(f"corpus_to_text: {src.package}: split names unknown units "
                             f"{sorted(unknown)}")
        for unit, pages in units:
            plan.append((src.splits.get(unit, src.default_split), src.package, unit, pages))

    seen: set[str] = set()
    texts: dict[str, list[str]] = {CALIB: [], EVAL: []}
    manifest = ["split\tpackage\tunit\tpages\tparagraphs\tbytes"]
    # Calib first, so that a paragraph shared by both halves stays in calib only.
    for split in (CALIB, EVAL):
        for unit_split, package, unit, pages in plan:
            if unit_split != split:
                continue
            src = next(s for s in SOURCES if s.package == package)
            kept: list[str] = []
            for page in pages:
                for para in html_paragraphs(root / src.doc_dir / page):
                    if para not in seen:
                        seen.add(para)
                        kept.append(para)
            texts[split].extend(kept)
            nbytes = sum(len(p.encode("utf-8")) + 2 for p in kept)
            manifest.append(f"{split}\t{package}\t{unit}\t{len(pages)}\t{len(kept)}\t{nbytes}")

    out_dir.mkdir(parents=True, exist_ok=True)
    for split, paras in texts.items():
        (out_dir / f"{split}.txt").write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    (out_dir / "MANIFEST.tsv").write_text("\n".join(manifest) + "\n", encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packages", action="store_true",
                    help="print PACKAGE=VERSION for every source and exit")
    ap.add_argument("--root", type=pathlib.Path, help="folder the packages were dpkg -x-ed into")
    ap.add_argument("--out", type=pathlib.Path, help="folder for calib.txt, eval.txt, MANIFEST.tsv")
    args = ap.parse_args()
    if args.packages:
        for src in SOURCES:
            print(f"{src.package}={src.version}")
        return 0
    if args.root is None or args.out is None:
        ap.error("--root and --out are required")
    build(args.root, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
