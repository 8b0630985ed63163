"""A generated site whose pages exist only after their script ran (bench/browser_bench.py).

Every page is an app shell: a ``<main id="app">`` that says "Loading", a stylesheet and one
shared script, ``/static/app.js``. The script fetches the page's data (``/data/NNNNNN.json``),
then writes the title, the paragraphs, the links, three images and a video into the DOM, sets
``document.title`` and marks the ``<main>`` with ``data-rendered`` (``READY_SELECTOR``). The
stylesheet uses a web font. The shell has no ``<a>`` at all: a crawler that does not run the
script finds no link beyond the first page, and one that does not wait for the fetch finds a
"Loading" page. Images, the font and the video are what both crawlers block.

``site-N/expected.json`` holds, per page path, the title, a marker word of its text and the
paths it links to: ``check_record`` says whether one crawled record has all three. The site is
a pure function of ``(pages, seed)``; ``ensure_js_site`` regenerates it only when its
``params.json`` differs.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import sys
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _harness import DEFAULT_SEED, WORK_DIR

JS_SITE_FORMAT_VERSION = 1
JS_LINKS_PER_PAGE = 10
IMAGES = 12  # distinct image files; every page shows three of them
IMAGES_PER_PAGE = 3
READY_SELECTOR = "main[data-rendered]"
#: What both crawlers refuse to load, by Playwright resource type.
BLOCKED_TYPES = ("image", "font", "media")

APP_JS = """\
(async () => {
  const app = document.getElementById("app");
  const data = await (await fetch(app.dataset.src)).json();
  document.title = data.title;
  const h1 = document.createElement("h1");
  h1.textContent = data.title;
  const nav = document.createElement("nav");
  const next = document.createElement("a");
  next.href = data.next;
  next.rel = "next";
  next.textContent = "Next page";
  nav.append(next);
  const parts = [h1, nav];
  data.paragraphs.forEach((text, i) => {
    const p = document.createElement("p");
    p.textContent = text + " ";
    const link = data.links[i];
    if (link) {
      const a = document.createElement("a");
      a.href = link.href;
      a.textContent = link.text;
      p.append(a);
    }
    parts.push(p);
  });
  const rest = data.links.slice(data.paragraphs.length);
  if (rest.length) {
    const ul = document.createElement("ul");
    for (const link of rest) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = link.href;
      a.textContent = link.text;
      li.append(a);
      ul.append(li);
    }
    parts.push(ul);
  }
  for (const n of data.images) {
    const img = document.createElement("img");
    img.src = `/img/${n}.png`;
    img.alt = "";
    img.width = 96;
    img.height = 96;
    parts.push(img);
  }
  const video = document.createElement("video");
  video.src = "/media/clip.webm";
  video.preload = "auto";
  video.muted = true;
  parts.push(video);
  app.replaceChildren(...parts);
  app.dataset.rendered = "1";
})();
"""

SITE_CSS = """\
@font-face { font-family: Bench; src: url(/fonts/bench.woff2) format("woff2"); }
body { font-family: Bench, sans-serif; max-width: 60em; margin: auto; }
img { margin: 4px; }
"""


def js_page_path(i: int) -> str:
    """URL path of page ``i``: page 0 is ``/index.html``, the others ``/p/NNNNNN.html``."""
    return "/index.html" if i == 0 else f"/p/{i:06d}.html"


def _href(src: int, dst: int, rng: random.Random) -> str:
    """A link from page ``src`` to ``dst``, root-relative or document-relative at random."""
    if rng.random() < 0.5:
        return js_page_path(dst)
    if dst == 0:
        return "../index.html" if src else "index.html"
    name = f"{dst:06d}.html"
    return name if src else f"p/{name}"


def _shell(i: int) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>Loading</title>\n"
        '<link rel="stylesheet" href="/static/site.css">\n'
        '<script src="/static/app.js" defer></script>\n'
        f'</head>\n<body>\n<main id="app" data-src="/data/{i:06d}.json"><p>Loading</p></main>\n'
        "</body>\n</html>\n"
    )


def noise_png(rng: random.Random, size: int = 96) -> bytes:
    """A valid RGB PNG of random pixels (about 28 KB at 96 px): costly if not blocked."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + rng.randbytes(size * 3) for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class JsSite:
    """A generated JavaScript site on disk: ``root`` is its document root."""

    pages: int
    seed: int
    dir: Path

    @property
    def root(self) -> Path:
        return self.dir / "www"

    def params(self) -> dict[str, Any]:
        return {
            "version": JS_SITE_FORMAT_VERSION,
            "pages": self.pages,
            "seed": self.seed,
            "links_per_page": JS_LINKS_PER_PAGE,
        }

    def is_ready(self) -> bool:
        try:
            return bool(json.loads((self.dir / "params.json").read_text()) == self.params())
        except (OSError, ValueError):
            return False

    def expected(self) -> dict[str, dict[str, Any]]:
        """Per page path: ``title``, ``marker`` (a word of its text), ``links`` (paths)."""
        data: dict[str, dict[str, Any]] = json.loads((self.dir / "expected.json").read_text())
        return data


def ensure_js_site(pages: int, seed: int = DEFAULT_SEED, work_dir: Path = WORK_DIR) -> JsSite:
    """Generate the ``pages``-page JavaScript site under ``work_dir/jssite-<pages>/``.

    Page ``i`` links to ``i + 1`` (the last one to the index), so every page is reachable
    from ``/index.html``, plus ``JS_LINKS_PER_PAGE - 1`` random others.
    """
    if pages < 2:
        raise ValueError("a site needs at least 2 pages")
    site = JsSite(pages=pages, seed=seed, dir=work_dir / f"jssite-{pages}")
    if site.is_ready():
        return site
    print(f"generating {pages:,}-page JavaScript site in {site.dir} ...", file=sys.stderr)
    started = time.perf_counter()
    tmp = work_dir / f".jssite-{pages}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    www = tmp / "www"
    for sub in ("p", "data", "static", "img", "fonts", "media"):
        (www / sub).mkdir(parents=True)
    rng = random.Random(f"skycrawl-browser-bench/{seed}/{pages}")
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 11))) for _ in range(2000)]
    expected: dict[str, dict[str, Any]] = {}
    for i in range(pages):
        nxt = i + 1 if i + 1 < pages else 0
        others = {rng.randrange(pages) for _ in range(JS_LINKS_PER_PAGE - 1)} - {i, nxt}
        title = f"Page {i} - {' '.join(rng.choices(words, k=3)).title()}"
        marker = f"marker{i:06d}x{rng.randrange(16**6):06x}"
        paragraphs = [
            " ".join(rng.choices(words, k=rng.randint(60, 120))).capitalize() + "."
            for _ in range(rng.randint(5, 8))
        ]
        paragraphs[0] = f"{marker} {paragraphs[0]}"
        links = [
            {"href": _href(i, d, rng), "text": " ".join(rng.choices(words, k=2))}
            for d in sorted(others)
        ]
        data = {
            "title": title,
            "next": _href(i, nxt, rng),
            "paragraphs": paragraphs,
            "links": links,
            "images": rng.sample(range(IMAGES), IMAGES_PER_PAGE),
        }
        (www / f"data/{i:06d}.json").write_text(json.dumps(data), encoding="utf-8")
        (www / js_page_path(i).lstrip("/")).write_text(_shell(i), encoding="utf-8")
        targets = sorted({js_page_path(d) for d in (nxt, *others)})
        expected[js_page_path(i)] = {"title": title, "marker": marker, "links": targets}
    (www / "static/app.js").write_text(APP_JS, encoding="utf-8")
    (www / "static/site.css").write_text(SITE_CSS, encoding="utf-8")
    for n in range(IMAGES):
        (www / f"img/{n}.png").write_bytes(noise_png(rng))
    (www / "fonts/bench.woff2").write_bytes(rng.randbytes(40_000))
    (www / "media/clip.webm").write_bytes(rng.randbytes(200_000))
    (www / "robots.txt").write_text("User-agent: *\nAllow: /\n", encoding="ascii")
    (tmp / "expected.json").write_text(json.dumps(expected))
    (tmp / "params.json").write_text(json.dumps(site.params()))
    shutil.rmtree(site.dir, ignore_errors=True)
    tmp.rename(site.dir)
    print(f"  done in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return site


# --------------------------------------------------------------------------------------------
# Reading the crawlers' output
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageFields:
    """What both crawlers extract from a page, out of either output format."""

    url: str
    status: int | None
    title: str
    text: str
    links: tuple[str, ...]


def page_fields(record: Mapping[str, Any]) -> PageFields:
    """The fields of one ``pages.jsonl`` line: skycrawl's (formats under ``content``, the
    title in ``content.metadata``) or the peer's (all at the top level)."""
    content = record.get("content")
    source: Mapping[str, Any] = content if isinstance(content, Mapping) else record
    metadata = source.get("metadata")
    title = metadata.get("title") if isinstance(metadata, Mapping) else None
    if title is None:
        title = source.get("title") or record.get("title")
    links = source.get("links") or []
    urls = tuple(
        str(link.get("url") if isinstance(link, Mapping) else link) for link in links if link
    )
    status = record.get("status")
    return PageFields(
        url=str(record.get("url", "")),
        status=status if isinstance(status, int) else None,
        title=str(title or ""),
        text=str(source.get("text") or ""),
        links=urls,
    )


def check_record(fields: PageFields, expected: Mapping[str, Mapping[str, Any]]) -> bool:
    """A page is correct when it is a page of the site with status 200, its rendered title,
    its marker in the text and every link of its data among its links (by path)."""
    want = expected.get(urlsplit(fields.url).path)
    if fields.status != 200 or want is None:
        return False
    paths = {urlsplit(url).path for url in fields.links}
    return (
        fields.title.strip() == want["title"]
        and want["marker"] in fields.text
        and set(want["links"]) <= paths
    )


def count_correct(path: Path, expected: Mapping[str, Mapping[str, Any]]) -> tuple[int, int]:
    """(distinct pages with status 200, distinct pages correct) in a JSON-lines file."""
    ok: set[str] = set()
    correct: set[str] = set()
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            fields = page_fields(record)
            if fields.status != 200 or fields.url.endswith("/robots.txt"):
                continue
            ok.add(fields.url)
            if check_record(fields, expected):
                correct.add(fields.url)
    return len(ok), len(correct)
