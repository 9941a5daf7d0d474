"""The calibration/evaluation text corpus: what scripts/fetch_corpus.sh built matches
docs/CORPUS.md, and the two halves share no paragraph. The converter itself is checked on a small
page that needs no download."""
import hashlib
import os
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import corpus_to_text  # noqa: E402  (scripts/ is not a package)

DOC = ROOT / "docs" / "CORPUS.md"
FETCH = ROOT / "scripts" / "fetch_corpus.sh"
SPLITS = ("calib", "eval")
# The sizes in docs/CORPUS.md are exact for the pinned sources; the tolerance only keeps the
# size check meaningful on its own when the checksum check is what fails.
SIZE_TOLERANCE = 0.02


def corpus_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("QGATE_MODEL_DIR", ROOT / "models")) / "corpus"


def documented() -> dict[str, dict[str, object]]:
    """Rows of docs/CORPUS.md's table: | calib.txt | bytes | words | paragraphs | sha256 |"""
    rows = {}
    row = re.compile(r"^\|\s*`?(calib|eval)\.txt`?\s*\|\s*([\d,]+)\s*\|\s*([\d,]+)\s*\|"
                     r"\s*([\d,]+)\s*\|\s*`?([0-9a-f]{64})`?\s*\|\s*$")
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = row.match(line)
        if m:
            nums = [int(g.replace(",", "")) for g in m.groups()[1:4]]
            rows[m.group(1)] = {"bytes": nums[0], "words": nums[1], "paragraphs": nums[2],
                                "sha256": m.group(5)}
    return rows


def pinned_sha256() -> dict[str, str]:
    text = FETCH.read_text(encoding="utf-8")
    return {split: re.search(rf"^{split.upper()}_SHA256=([0-9a-f]{{64}})$", text, re.M).group(1)
            for split in SPLITS}


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    d = corpus_dir()
    missing = [f"{s}.txt" for s in SPLITS if not (d / f"{s}.txt").is_file()]
    if missing:
        pytest.skip(f"corpus not fetched ({', '.join(missing)} missing in {d}); "
                    "run scripts/fetch_corpus.sh")
    return {s: (d / f"{s}.txt").read_bytes() for s in SPLITS}


def paragraphs(data: bytes) -> list[str]:
    return data.decode("utf-8").rstrip("\n").split("\n\n")


# --- consistency of the repository's own files (no download needed) ---

def test_docs_list_both_splits_with_the_pinned_checksums():
    rows = documented()
    assert set(rows) == set(SPLITS), f"sizes table in {DOC} must have a row per split"
    for split, sha in pinned_sha256().items():
        assert rows[split]["sha256"] == sha, f"{split}: docs/CORPUS.md and fetch_corpus.sh differ"


def test_docs_name_every_pinned_package_version():
    text = DOC.read_text(encoding="utf-8")
    for src in corpus_to_text.SOURCES:
        assert f"{src.package}={src.version}" in text, f"{src.package} version not in {DOC}"


def test_converter_keeps_prose_and_drops_code_tables_and_navigation(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>A Title That Is Long Enough To Count As Eight Words</title></head>"
        "<body><ul class='docnav'><li>Prev page link that says a great many words here</li></ul>"
        "<h2>Heading text that is long enough to be a sentence of prose</h2>"
        "<div class='para'>The first paragraph has <code>inline code</code> and   several\n"
        "words spread over lines.<div class='url'>→ https://example.org/some/long/link/x</div>"
        "</div>"
        "<pre class='screen'>$ apt-get install something with many words on this line</pre>"
        "<table><tr><td>a cell with a good many words in it to pass the filter</td></tr></table>"
        "<p>Too short to keep.</p>"
        "<p>192.168.0.1 10.0.0.1 172.16.0.1 255.255.255.0 8.8.8.8 1.1.1.1 9.9.9.9 127.0.0.1</p>"
        "<p>Second paragraph &amp; entities are decoded and the text stays on one line."
        "</body></html>",
        encoding="utf-8")
    assert corpus_to_text.html_paragraphs(page) == [
        "The first paragraph has inline code and several words spread over lines.",
        "Second paragraph & entities are decoded and the text stays on one line.",
    ]


# --- the fetched corpus (skipped when scripts/fetch_corpus.sh has not run) ---

def test_files_are_utf8_paragraphs_separated_by_blank_lines(corpus):
    for split, data in corpus.items():
        text = data.decode("utf-8")  # strict: raises on invalid UTF-8
        assert text.endswith("\n") and not text.endswith("\n\n"), split
        for i, para in enumerate(paragraphs(data)):
            assert para and para == para.strip() and "\n" not in para, f"{split} paragraph {i}"


def test_eval_shares_no_paragraph_with_calib(corpus):
    calib = set(paragraphs(corpus["calib"]))
    shared = [p for p in paragraphs(corpus["eval"]) if p in calib]
    assert not shared, f"{len(shared)} eval paragraphs also in calib, e.g. {shared[0][:80]!r}"


def test_sizes_and_checksums_match_the_docs(corpus):
    rows = documented()
    for split, data in corpus.items():
        want = rows[split]
        assert abs(len(data) - want["bytes"]) <= SIZE_TOLERANCE * want["bytes"], split
        assert len(paragraphs(data)) == pytest.approx(want["paragraphs"], rel=SIZE_TOLERANCE)
        assert hashlib.sha256(data).hexdigest() == want["sha256"], \
            f"{split}.txt does not match the SHA-256 in {DOC}"
    assert len(corpus["calib"]) >= 2_000_000 and len(corpus["eval"]) >= 1_000_000


def test_sha256sums_file_matches_the_files(corpus):
    sums = {}
    for line in (corpus_dir() / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.lstrip("*")] = digest
    for split, data in corpus.items():
        assert sums[f"{split}.txt"] == hashlib.sha256(data).hexdigest(), split
