"""Render an HTML page in a real browser engine and report what its rendered DOM shows.

    facts = render("results/report/report.html", screenshot=tmp_path / "report.png")
    facts.problems("Verification")      # [] when that h2's headings, images and tables all show
    facts.problems()                    # the same for the whole page, plus console errors, requests, overflow
    facts.section("Verification")       # the headings, images and tables under that h2, with their boxes
    facts.console_errors                # what the page logged at error level (uncaught exceptions included)

The engine is Qt WebEngine (Chromium 140 in PySide6-WebEngine 6.12, Qt's own binding, from PyPI: the ``test``
extra), headless on Qt's ``offscreen`` platform with software rendering: no display, GPU or system browser
needed. It runs in a child process of its own (``python tests/browser.py --child ...``), so a crash or hang of
the engine is one failed call, not a dead test session. Chromium's sandbox is off (it refuses to run as root, as
CI does): the page is a local file and every request for anything but ``file:`` or ``data:`` is blocked and
recorded.

Visibility is judged in the browser: an element is visible when its box has an area, its computed style shows
it, and a hit test at its centre lands on it (nothing covers it). The page is laid out at ``width`` CSS pixels
and the viewport then grown to the page's height (in tiles of at most 16,000 px, Chromium's largest frame), so
every element is hit-tested in view; each tile is grabbed only once a marker drawn with it shows in the frame.
An image is blank when its box in the screenshot is one flat colour.

Command line: ``python tests/browser.py RESULTS_FOLDER_OR_HTML [--png FILE] [--width PX]`` renders a report
and prints its headings and problems.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import PIL.Image
import PIL.ImageStat

WIDTH = 1280               # CSS px; the report's body is at most 1200 px wide
FIRST_HEIGHT = 900         # the viewport's height while the page loads
TILE = 16000               # the tallest frame grabbed at once (Chromium fails at 40,000 px)
TIMEOUT = 120.0            # seconds for one render, engine start included


class BrowserMissing(RuntimeError):
    """Qt WebEngine is not installed (``pip install -e '.[test]'`` installs it)."""


@dataclass(frozen=True)
class Box:
    """An element's box in page coordinates (CSS px, the page's top left at 0, 0)."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    section: str | None     # the text of the h2 it follows (itself for an h2), None before the first
    visible: bool
    box: Box


@dataclass(frozen=True)
class Image:
    alt: str
    section: str | None
    complete: bool
    natural_width: int      # 0: the image did not load or decode
    natural_height: int
    visible: bool
    box: Box

    @property
    def loaded(self) -> bool:
        return self.complete and self.natural_width > 0 and self.natural_height > 0


@dataclass(frozen=True)
class TableFacts:
    caption: str
    section: str | None
    rows: int               # rows of its bodies (every row when it has no tbody)
    columns: int            # the most cells in one row
    visible: bool
    box: Box


@dataclass(frozen=True)
class Message:
    level: str              # "info", "warning" or "error"
    text: str
    source: str
    line: int


@dataclass(frozen=True)
class Section:
    """What lies under one h2: from it to the next h2."""

    name: str
    headings: list[Heading]
    images: list[Image]
    tables: list[TableFacts]


@dataclass(frozen=True)
class Facts:
    """What the browser showed of one page (see the module docstring)."""

    url: str
    title: str
    engine: str                         # the engine's user agent
    viewport_width: int                 # CSS px
    scroll_width: int                   # the document's width; > viewport_width: it overflows sideways
    page_height: int
    headings: list[Heading]
    images: list[Image]
    tables: list[TableFacts]
    messages: list[Message]             # the console, in order
    blocked: list[str]                  # requests refused (anything but file: and data:)
    wide: list[str]                     # up to 10 elements reaching past the viewport's right edge
    screenshot: Path                    # PNG of the whole page, viewport_width x page_height px
    log: str = field(default="", repr=False)   # the engine's own stderr

    @property
    def console_errors(self) -> list[Message]:
        return [m for m in self.messages if m.level == "error"]

    @property
    def overflows(self) -> bool:
        return self.scroll_width > self.viewport_width

    @cached_property
    def _grey(self) -> PIL.Image.Image:
        """The screenshot in grey levels, read once."""
        return PIL.Image.open(self.screenshot).convert("L")

    def problems(self, section: str | None = None) -> list[str]:
        """What the page (or one h2 section) does not show: a heading not visible, an image not loaded, not
        visible or blank in the screenshot, a table without rows; with no section also console errors, blocked
        requests and a sideways overflow. Empty when everything shows."""
        part = self.section(section) if section is not None else Section("", self.headings, self.images,
                                                                          self.tables)
        out = [f"heading {h.text!r} is not visible" for h in part.headings if not h.visible]
        for i in part.images:
            if not i.loaded:
                out.append(f"image {i.alt!r} in {i.section!r} did not load (natural width {i.natural_width})")
            elif not i.visible:
                out.append(f"image {i.alt!r} in {i.section!r} is not visible")
            elif PIL.ImageStat.Stat(self._grey.crop((round(i.box.x), round(i.box.y), round(i.box.x + i.box.width),
                                               round(i.box.y + i.box.height)))).stddev[0] < 2:
                out.append(f"image {i.alt!r} in {i.section!r} is blank in the screenshot")
        out += [f"table {t.caption!r} in {t.section!r} has no rows" for t in part.tables if t.rows == 0]
        out += [f"table {t.caption!r} in {t.section!r} is not visible" for t in part.tables if not t.visible]
        if section is None:
            out += [f"console error: {m.text} ({m.source}:{m.line})" for m in self.console_errors]
            out += [f"blocked request: {url}" for url in self.blocked]
            if self.overflows:
                out.append(f"the page is {self.scroll_width} px wide in a {self.viewport_width} px window: "
                           f"{', '.join(self.wide)}")
        return out

    def section(self, name: str) -> Section:
        """The headings, images and tables under the h2 ``name`` (KeyError listing the h2s if there is none)."""
        names = [h.text for h in self.headings if h.level == 2]
        if name not in names:
            raise KeyError(f"no section {name!r}; the page's sections: {names}")
        return Section(name, [h for h in self.headings if h.section == name],
                       [i for i in self.images if i.section == name], [t for t in self.tables if t.section == name])


def available() -> bool:
    """Whether Qt WebEngine's Python module is installed (looked up, not imported: Qt stays out of this process)."""
    spec = importlib.util.find_spec("PySide6")
    return spec is not None and any(Path(p).glob("QtWebEngineWidgets.*") for p in spec.submodule_search_locations or ())


def render(html_path: str | os.PathLike[str], screenshot: str | os.PathLike[str] | None = None,
           width: int = WIDTH, timeout: float = TIMEOUT, tile: int = TILE) -> Facts:
    """Load ``html_path`` in the browser at ``width`` CSS px, write a full-page PNG to ``screenshot`` (default:
    a new temporary folder), grabbed in tiles of at most ``tile`` px, and return what the rendered page shows. BrowserMissing without Qt WebEngine;
    RuntimeError when the page does not load or the engine fails."""
    if not available():
        raise BrowserMissing("Qt WebEngine (PySide6-WebEngine) is not installed: pip install -e '.[test]'")
    page = Path(html_path).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"{page}: no such page")
    png = Path(screenshot) if screenshot is not None else Path(tempfile.mkdtemp(prefix="browser-")) / "page.png"
    with tempfile.TemporaryDirectory(prefix="browser-") as tmp:
        out = Path(tmp) / "facts.json"
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QT_QUICK_BACKEND": "software",
               "QTWEBENGINE_DISABLE_SANDBOX": "1", "XDG_RUNTIME_DIR": tmp,
               "QTWEBENGINE_CHROMIUM_FLAGS": "--disable-gpu --force-device-scale-factor=1"}
        child = subprocess.Popen([sys.executable, __file__, "--child", str(page), str(png), str(width), str(tile),
                                  str(out)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
        try:
            log, _ = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _end_group(child.pid)
            log, _ = child.communicate()
            raise RuntimeError(f"{page}: the browser did not finish in {timeout:.0f} s; its log:\n{log[-3000:]}")
        _end_group(child.pid)                        # an engine process the child left behind, if any
        if child.returncode != 0 or not out.exists():
            raise RuntimeError(f"{page}: the browser failed (exit {child.returncode}); its log:\n{log[-3000:]}")
        raw = json.loads(out.read_text(encoding="utf-8"))
    if raw.get("error"):
        raise RuntimeError(f"{page}: {raw['error']}; the engine's log:\n{log[-3000:]}")
    return _facts(raw, png, log)


def _end_group(pgid: int) -> None:
    """End the process group of our child (its own session, started for it): it and its engine processes."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _facts(raw: dict[str, Any], png: Path, log: str) -> Facts:
    dom, visible = raw["dom"], set(raw["visible"])
    items = {"headings": [], "images": [], "tables": []}
    for i, el in enumerate(dom["elements"]):
        box, seen = Box(*el.pop("box")), i in visible
        kind = el.pop("kind")
        if kind == "heading":
            items["headings"].append(Heading(**el, visible=seen, box=box))
        elif kind == "img":
            items["images"].append(Image(**el, visible=seen, box=box))
        else:
            items["tables"].append(TableFacts(**el, visible=seen, box=box))
    return Facts(url=raw["url"], title=dom["title"], engine=raw["engine"], viewport_width=dom["viewport_width"],
                 scroll_width=raw["scroll_width"], page_height=dom["page_height"], **items,
                 messages=[Message(**m) for m in raw["messages"]], blocked=raw["blocked"], wide=dom["wide"],
                 screenshot=png, log=log)


# --- the child: runs the engine --------------------------------------------------------------------------------

# Every h1-h4, img and table in document order, with its section, box (page coordinates) and own facts.
_COLLECT = """(() => {
  const box = el => { const r = el.getBoundingClientRect();
                      return [r.left + scrollX, r.top + scrollY, r.width, r.height]; };
  const text = el => (el.textContent || '').replace(/\\s+/g, ' ').trim();
  const elements = [];
  let section = null;
  window.__browserElements = [];
  for (const el of document.querySelectorAll('h1, h2, h3, h4, img, table')) {
    const tag = el.tagName.toLowerCase();
    if (tag === 'h2') section = text(el);
    let facts;
    if (tag === 'img') {
      facts = {kind: 'img', alt: el.alt, section, complete: el.complete, natural_width: el.naturalWidth,
               natural_height: el.naturalHeight};
    } else if (tag === 'table') {
      const rows = el.tBodies.length ? [...el.tBodies].reduce((n, b) => n + b.rows.length, 0) : el.rows.length;
      facts = {kind: 'table', caption: el.caption ? text(el.caption) : '', section, rows,
               columns: Math.max(0, ...[...el.rows].map(r => r.cells.length))};
    } else {
      facts = {kind: 'heading', level: +tag[1], text: text(el), section};
    }
    facts.box = box(el);
    elements.push(facts);
    window.__browserElements.push(el);
  }
  const wide = [...document.body.querySelectorAll('*')]
    .filter(el => el.getBoundingClientRect().right > innerWidth + 0.5).slice(0, 10)
    .map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className ? '.' + el.className : ''));
  return JSON.stringify({elements, title: document.title, viewport_width: innerWidth,
                         page_height: document.documentElement.scrollHeight, wide});
})()"""

# The indices of the collected elements whose centre lies in the viewport and is hit by the element itself.
_VISIBLE = """(() => {
  const out = [];
  window.__browserElements.forEach((el, i) => {
    const r = el.getBoundingClientRect(), s = getComputedStyle(el);
    if (r.width <= 0 || r.height <= 0 || s.visibility !== 'visible' || +s.opacity === 0) return;
    const x = r.left + r.width / 2, y = r.top + r.height / 2;
    if (x < 0 || y < 0 || x >= innerWidth || y >= innerHeight) return;
    const hit = document.elementFromPoint(x, y);
    if (hit && (hit === el || el.contains(hit))) out.push(i);
  });
  return JSON.stringify(out);
})()"""

_MARK = ("(() => { let m = document.getElementById('__browser_mark'); if (!m) { m = document.createElement('div');"
         " m.id = '__browser_mark'; document.documentElement.appendChild(m); }"
         " m.style.cssText = 'position:fixed;right:0;bottom:0;width:2px;height:2px;z-index:2147483647;"
         "pointer-events:none;background:rgb(%d,%d,%d)'; return 1; })()")
_UNMARK = "(() => { const m = document.getElementById('__browser_mark'); if (m) m.remove(); return 1; })()"


def _child(page: str, png: str, width: int, tile_max: int, out: str) -> None:
    """Load the page, collect its facts, grab it tile by tile, write facts.json (see the module docstring)."""
    from PySide6.QtCore import QEventLoop, QTimer, QUrl
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtWebEngineCore import (QWebEnginePage, QWebEngineProfile, QWebEngineSettings,
                                       QWebEngineUrlRequestInterceptor)
    from PySide6.QtWebEngineWidgets import QWebEngineView
    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    messages: list[dict[str, Any]] = []
    blocked: list[str] = []
    levels = {QWebEnginePage.JavaScriptConsoleMessageLevel.InfoMessageLevel: "info",
              QWebEnginePage.JavaScriptConsoleMessageLevel.WarningMessageLevel: "warning",
              QWebEnginePage.JavaScriptConsoleMessageLevel.ErrorMessageLevel: "error"}

    class Page(QWebEnginePage):
        def javaScriptConsoleMessage(self, level, message, line, source):  # noqa: N802 (Qt's name)
            messages.append({"level": levels.get(level, str(level)), "text": message, "source": source,
                             "line": line})

    class LocalOnly(QWebEngineUrlRequestInterceptor):
        def interceptRequest(self, info):  # noqa: N802
            url = info.requestUrl()
            if url.scheme() not in ("file", "data"):
                blocked.append(url.toString()[:200])
                info.block(True)

    def wait(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    def js(code: str) -> Any:
        loop, result = QEventLoop(), []
        view.page().runJavaScript(code, 0, lambda value: (result.append(value), loop.quit()))
        loop.exec()
        return result[0]

    def until(test, seconds: float, what: str) -> None:
        for _ in range(int(seconds * 20)):
            if test():
                return
            wait(50)
        raise TimeoutError(what)

    profile = QWebEngineProfile(app)        # no storage name: off the record, nothing written to disk
    interceptor = LocalOnly(profile)
    profile.setUrlRequestInterceptor(interceptor)
    view = QWebEngineView()
    view.setPage(Page(profile, view))
    # no scroll bars: the viewport is ``width`` px wide at any height, and a frame's corner is the page's
    view.settings().setAttribute(QWebEngineSettings.WebAttribute.ShowScrollBars, False)
    # a local page's requests for remote URLs are refused before any interceptor sees them: let them through
    # to ours, which records and blocks them (so ``blocked`` says what the page tried to fetch)
    view.settings().setAttribute(QWebEngineSettings.WebAttribute.LocalContentCanAccessRemoteUrls, True)
    view.resize(width, FIRST_HEIGHT)
    view.show()
    done: list[bool] = []
    view.page().loadFinished.connect(done.append)
    view.page().load(QUrl.fromLocalFile(page))
    result: dict[str, Any] = {"url": QUrl.fromLocalFile(page).toString()}
    try:
        until(lambda: bool(done), 60, "the page did not finish loading in 60 s")
        if not done[0]:
            raise RuntimeError("the page did not load")
        until(lambda: js("[...document.images].every(i => i.complete)"), 30,
              "the page's images were still loading after 30 s")
        result["engine"] = js("navigator.userAgent")
        result["scroll_width"] = int(js("document.documentElement.scrollWidth"))   # at the first viewport's height
        height = int(js("document.documentElement.scrollHeight"))
        tile = min(height, tile_max)
        view.resize(width, tile)
        until(lambda: js("innerHeight") == tile, 30, f"the viewport did not grow to {tile} px")
        dom = json.loads(js(_COLLECT))
        height = dom["page_height"]
        shot = QImage(width, height, QImage.Format.Format_RGB32)
        shot.fill(0xFFFFFFFF)
        painter = QPainter(shot)
        visible: set[int] = set()
        for n, top in enumerate(range(0, height, tile)):
            top = min(top, height - tile)
            js(f"window.scrollTo(0, {top}); 1")
            until(lambda: js("Math.round(scrollY)") == top, 30, f"the page did not scroll to {top} px")
            visible |= set(json.loads(js(_VISIBLE)))
            colour = (1 + n % 250, 2, 3 + n // 250)      # the marker's colour names the tile
            js(_MARK % colour)
            frames: list[QImage] = []

            def grabbed() -> bool:
                frame = view.grab().toImage()
                if (frame.width(), frame.height()) == (width, tile) \
                        and frame.pixelColor(width - 1, tile - 1).getRgb()[:3] == colour:
                    frames.append(frame)
                    return True
                return False

            until(grabbed, 60, f"no frame of the page at {top} px within 60 s")
            frame = frames[0]
            right = frame.pixelColor(width - 3, tile - 1)   # paint the marker over with the pixels beside it
            for x in (width - 2, width - 1):
                for y in (tile - 2, tile - 1):
                    frame.setPixelColor(x, y, right)
            painter.drawImage(0, top, frame)
        painter.end()
        js(_UNMARK)
        if not shot.save(png, "PNG"):
            raise RuntimeError(f"{png}: cannot write the screenshot")
        result.update(dom=dom, visible=sorted(visible), messages=messages, blocked=blocked)
    except (TimeoutError, RuntimeError) as exc:
        result["error"] = str(exc)
    Path(out).write_text(json.dumps(result), encoding="utf-8")
    view.close()
    del view


def _print(facts: Facts) -> None:
    print(f"{facts.url}\n  engine: {facts.engine}\n  title: {facts.title}")
    print(f"  page: {facts.viewport_width} px window, {facts.scroll_width} px wide, {facts.page_height} px tall")
    for h in facts.headings:
        print(f"  {'  ' * (h.level - 1)}h{h.level} {h.text}{'' if h.visible else '  (NOT VISIBLE)'}")
    print(f"  {len(facts.images)} images, {len(facts.tables)} tables, {len(facts.messages)} console messages "
          f"({len(facts.console_errors)} errors), {len(facts.blocked)} blocked requests")
    problems = facts.problems()
    print("  problems:" + "".join(f"\n    {p}" for p in problems) if problems else "  problems: none")
    print(f"  screenshot: {facts.screenshot}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render a biasgrid report in a headless browser (Qt WebEngine) "
                                                 "and print what the rendered page shows.")
    parser.add_argument("report", help="a results folder (its report/report.html), a report folder or an HTML file")
    parser.add_argument("--png", help="where to write the full-page screenshot (default: a temporary folder)")
    parser.add_argument("--width", type=int, default=WIDTH, help=f"the viewport's width in CSS px ({WIDTH})")
    args = parser.parse_args(argv)
    path = Path(args.report)
    for candidate in (path, path / "report.html", path / "report" / "report.html"):
        if candidate.is_file():
            _print(render(candidate, args.png, args.width))
            return 0
    print(f"{path}: no report.html there (expected an HTML file, a report folder or a results folder)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        sys.exit(main())
