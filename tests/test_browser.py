"""The report of a tiny real run, rendered in a real browser engine (Qt WebEngine, tests/browser.py): every
heading shown, every figure loaded and painted, every table with its rows, no console error, no request
outside the page, nothing wider than the window, a full-page screenshot. The expected headings, figures and
tables are read from report.html's source with Python's HTML parser, the figures' sizes decoded by Pillow; the
checks themselves read the rendered page. A page broken on purpose shows that each check can fail."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import browser
from conftest import needs_browser
from test_grid import cli

pytestmark = needs_browser

TINY = """
[data.synth]
identities_per_group = 20
dim = 16
[grid]
models = ["logreg"]
seeds = 1
train_groups = ["asian", "all"]
[protocol]
train_per_gender = 8
test_per_gender = 6
[verification]
max_impostor_pairs = 5000
bootstrap = 20
[tsne]
perplexity = 5.0
pca_dims = 8
subsets = ["all"]
[run]
executor = "local"
workers = 1
"""

# Sections a run of every built-in kind has; the rest is read from the page's source.
SECTIONS = ["Failed and missing jobs", "Accuracy matrices", "Verification", "t-SNE of the training embeddings",
            "Configuration and provenance"]


class _Source(HTMLParser):
    """What report.html's source declares: headings (level, text), image sources, rows of each table body."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[tuple[int, str]] = []
        self.images: list[str] = []
        self.rows: list[int] = []
        self._heading: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("h1", "h2", "h3", "h4"):
            self._heading = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        elif tag == "table":
            self.rows.append(0)
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows[-1] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2", "h3", "h4") and self._heading is not None:
            self.headings.append((int(tag[1]), " ".join("".join(self._heading).split())))
            self._heading = None
        elif tag == "tbody":
            self._in_body = False

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)


def _source(path: Path) -> _Source:
    parser = _Source()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, browser.Facts]:
    """A tiny real run (every built-in kind, `biasgrid run` as a user runs it), its report rendered once."""
    tmp = tmp_path_factory.mktemp("browser")
    (tmp / "grid.toml").write_text(TINY)
    done = cli("run", "--config", str(tmp / "grid.toml"), "--out", str(tmp / "results"), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    page = tmp / "results" / "report" / "report.html"
    assert f"report: {page}" in done.stdout
    return page, browser.render(page, tmp / "report.png")


def test_every_heading_is_shown(rendered):
    page, facts = rendered
    source = _source(page)
    assert [(h.level, h.text) for h in facts.headings] == source.headings
    names = [h.text for h in facts.headings if h.level == 2]
    assert set(SECTIONS) <= set(names), names
    hidden = [h.text for h in facts.headings if not h.visible]
    assert not hidden, f"headings not visible: {hidden}"
    h1 = facts.headings[0]
    assert facts.title == "biasgrid report" and (h1.level, h1.text, h1.section) == (1, "biasgrid report", None)
    # headings in document order, top to bottom, each inside the window's width
    tops = [h.box.y for h in facts.headings]
    assert tops == sorted(tops)
    assert all(0 <= h.box.x and h.box.x + h.box.width <= facts.viewport_width for h in facts.headings)


def test_every_figure_is_loaded_and_painted(rendered):
    page, facts = rendered
    sources = _source(page).images
    assert len(facts.images) == len(sources) >= 4        # accuracy matrix, verification figures, t-SNE
    shot = np.asarray(Image.open(facts.screenshot).convert("L"), dtype=float)
    for img, src in zip(facts.images, sources):
        assert img.loaded and img.visible, img
        png = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert (img.natural_width, img.natural_height) == png.size, img.alt
        assert 0 < img.box.width <= facts.viewport_width and img.box.height > 0, img
        # scaled to fit, keeping its aspect ratio (figure img{max-width:100%;height:auto})
        assert img.box.height / img.box.width == pytest.approx(png.size[1] / png.size[0], rel=0.02), img.alt
        x, y, w, h = (round(v) for v in (img.box.x, img.box.y, img.box.width, img.box.height))
        assert shot[y:y + h, x:x + w].std() > 10, f"figure {img.alt!r} is blank in the screenshot"
    assert {i.section for i in facts.images} >= {"Accuracy matrices", "Verification",
                                                  "t-SNE of the training embeddings"}


def test_every_table_has_rows(rendered):
    page, facts = rendered
    rows = _source(page).rows
    assert [t.rows for t in facts.tables] == rows
    assert len(facts.tables) >= 5 and all(t.rows > 0 and t.columns > 0 and t.visible for t in facts.tables), \
        [t for t in facts.tables if not (t.rows and t.columns and t.visible)]
    assert all(t.caption for t in facts.tables)
    assert facts.section("Configuration and provenance").tables[0].caption == "Provenance"


def test_no_console_errors_no_requests_no_overflow(rendered):
    _, facts = rendered
    assert facts.console_errors == [] and facts.messages == []
    assert facts.blocked == []                          # self-contained: nothing fetched but the page itself
    assert "Chrome/" in facts.engine and "QtWebEngine/" in facts.engine
    assert facts.viewport_width == browser.WIDTH
    assert not facts.overflows and facts.wide == [], facts.wide


def test_screenshot_is_the_whole_page(rendered):
    _, facts = rendered
    assert facts.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shot = Image.open(facts.screenshot)
    assert shot.size == (facts.viewport_width, facts.page_height)
    grey = np.asarray(shot.convert("L"))
    assert (grey < 128).mean() > 0.005 and (grey > 250).mean() > 0.3   # text and figures on a white page
    assert len(np.unique(grey)) > 50
    # the title's heading is painted in dark text where the browser laid it out
    h1 = facts.headings[0].box
    assert grey[round(h1.y):round(h1.y + h1.height), round(h1.x):round(h1.x + h1.width)].min() < 80
    # the configuration's table near the bottom is painted too: the screenshot's tiles reach the end
    last = facts.tables[-1].box
    assert grey[round(last.y):round(last.y + last.height), round(last.x):round(last.x + last.width)].std() > 10


BROKEN = """<!DOCTYPE html><html><head><title>broken</title></head><body>
<h1>Broken on purpose</h1>
<h2>Shown</h2><table><caption>full</caption><tbody><tr><td>1</td></tr><tr><td>2</td></tr></tbody></table>
<h2 style="display:none">Not displayed</h2>
<div style="position:relative"><h2>Covered</h2><div style="position:absolute;inset:0;background:#fff"></div></div>
<h2>Mitigation</h2>
<img alt="missing" src="missing.png"><img alt="remote" src="http://127.0.0.1:9/x.png">
<img alt="two colours" src="data:image/png;base64,{two}"><img alt="white" src="data:image/png;base64,{white}">
<table><caption>empty</caption><thead><tr><th>a</th></tr></thead><tbody></tbody></table>
<div style="width:3000px;height:4px;background:#000" class="wide"></div>
<script>console.error("planted"); notDefined();</script>
</body></html>"""


def test_each_section_is_shown(rendered):
    # the one-line check a new section gets: assert facts.problems("Its heading") == []
    _, facts = rendered
    for name in [h.text for h in facts.headings if h.level == 2]:
        assert facts.problems(name) == [], name
        assert facts.section(name).headings[0].text == name
    assert facts.problems() == []


def _png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_each_check_can_fail(tmp_path, capsys):
    two = Image.new("RGB", (8, 5), "red")
    two.paste((0, 0, 255), (4, 0, 8, 5))
    page = tmp_path / "broken.html"
    page.write_text(BROKEN.replace("{two}", _png(two)).replace("{white}", _png(Image.new("RGB", (30, 20), "white"))))
    facts = browser.render(page, tmp_path / "broken.png", width=800)
    visible = {h.text: h.visible for h in facts.headings}
    assert visible == {"Broken on purpose": True, "Shown": True, "Not displayed": False, "Covered": False,
                       "Mitigation": True}
    mitigation = facts.section("Mitigation")
    assert [(i.alt, i.loaded) for i in mitigation.images] == [("missing", False), ("remote", False),
                                                             ("two colours", True), ("white", True)]
    assert (mitigation.images[2].natural_width, mitigation.images[2].natural_height) == (8, 5)
    assert [(t.caption, t.rows, t.columns) for t in facts.tables] == [("full", 2, 1), ("empty", 0, 1)]
    assert [t.caption for t in mitigation.tables] == ["empty"]
    assert [m.text for m in facts.console_errors] == ["planted", "Uncaught ReferenceError: notDefined is not defined"]
    assert facts.blocked == ["http://127.0.0.1:9/x.png"]
    assert facts.overflows and facts.scroll_width >= 3000 and "div.wide" in facts.wide
    assert Image.open(facts.screenshot).size == (800, facts.page_height)
    assert facts.problems("Shown") == []
    assert facts.problems("Mitigation") == [
        "image 'missing' in 'Mitigation' did not load (natural width 0)",
        "image 'remote' in 'Mitigation' did not load (natural width 0)",
        "image 'white' in 'Mitigation' is blank in the screenshot",
        "table 'empty' in 'Mitigation' has no rows"]
    problems = facts.problems()
    assert problems[:2] == ["heading 'Not displayed' is not visible", "heading 'Covered' is not visible"]
    assert problems[2:6] == facts.problems("Mitigation")
    assert problems[6].startswith("console error: planted (file://") and "ReferenceError" in problems[7]
    assert problems[8:9] == ["blocked request: http://127.0.0.1:9/x.png"]
    assert problems[9].startswith(f"the page is {facts.scroll_width} px wide in a 800 px window: ")
    assert len(problems) == 10
    with pytest.raises(KeyError, match="no section 'Fairness'.*'Mitigation'"):
        facts.section("Fairness")
    browser._print(facts)
    printed = capsys.readouterr().out
    assert "h2 Covered  (NOT VISIBLE)" in printed and "\n    blocked request: http://127.0.0.1:9/x.png" in printed


def test_a_tall_page_is_grabbed_in_tiles(tmp_path):
    # 5 bands of 500 px in tiles of 1,000 px: tiles at 0, 1,000 and 1,500 (the last one overlaps the second)
    colours = [(255, 0, 0), (0, 128, 0), (0, 0, 255), (255, 255, 0), (128, 0, 128)]
    bands = "".join(f'<div style="height:500px;background:rgb{c}"><h2 style="margin:0">Band {n}</h2></div>'
                    for n, c in enumerate(colours))
    page = tmp_path / "tall.html"
    page.write_text(f'<!DOCTYPE html><html><body style="margin:0">{bands}</body></html>')
    facts = browser.render(page, tmp_path / "tall.png", width=600, tile=1000)
    assert facts.page_height == 2500 and [h.text for h in facts.headings] == [f"Band {n}" for n in range(5)]
    assert all(h.visible for h in facts.headings) and facts.problems() == []
    shot = Image.open(facts.screenshot).convert("RGB")
    assert shot.size == (600, 2500)
    for n, colour in enumerate(colours):
        for y in (n * 500 + 100, n * 500 + 499):      # inside each band, up to its last row
            assert shot.getpixel((300, y)) == colour, (n, y)
    assert shot.getpixel((599, 2499)) == colours[-1]   # the fence marker painted over in the corner


def test_command_line_refuses_a_folder_without_a_report(tmp_path, capsys):
    assert browser.main([str(tmp_path)]) == 2
    assert "no report.html there" in capsys.readouterr().err
