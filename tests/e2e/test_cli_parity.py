"""CLI parity with the API (issue 12): ``--include/--exclude``, ``--no-robots``, ``--header``,
``--user-agent`` reach the crawler; ``skycrawl export CRAWL_ID`` writes a crawl's results
again; ``crawl --help`` tells each option's meaning and default."""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from functions.local.cli import build_parser
from functions.local.crawl_options import render_options
from tests.e2e.cli_support import run_cli


class _Recording(BaseHTTPRequestHandler):
    """``/`` links to /a, /b, /private/c and /skip/d; robots.txt disallows /private/."""

    seen: ClassVar[list[tuple[str, str, str]]] = []  # (path, user-agent, accept-language)

    def do_GET(self) -> None:
        self.seen.append(
            (self.path, self.headers.get("user-agent", ""), self.headers.get("accept-language", ""))
        )
        if self.path == "/robots.txt":
            body, kind = b"User-agent: *\nDisallow: /private/\n", "text/plain"
        else:
            links = b"".join(
                b'<a href="%s">x</a>' % p for p in (b"/a", b"/b", b"/private/c", b"/skip/d")
            )
            body, kind = b"<html><title>t</title><body>%s</body></html>" % links, "text/html"
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@contextlib.contextmanager
def _site() -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    seen: list[tuple[str, str, str]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Recording,), {"seen": seen}))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", seen
    finally:
        server.shutdown()
        server.server_close()


def _help_entries(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and "-h" not in a.option_strings]


def test_crawl_help_gives_every_option_a_meaning_and_its_default() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("crawl", "demo"):
        for action in _help_entries(sub.choices[command]):
            name = action.option_strings[0]
            assert action.help, f"{command} {name} has no help"
            assert "default" in action.help, f"{command} {name} does not say its default"
    text = sub.choices["crawl"].format_help()
    for option in ("--include", "--exclude", "--no-robots", "--header", "--user-agent"):
        assert option in text
    for option in ("--render", "--wait-for", "--scroll", "--scroll-delay"):
        assert option in text


def test_render_options_become_the_crawl_requests_fields() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["crawl", "http://127.0.0.1:9/", "--render", "auto", "--wait-for", "#app", "--scroll", "7"]
    )
    assert render_options(args) == {
        "render": "auto",
        "wait_for": "#app",
        "scroll": {"max_scrolls": 7},
    }
    args = parser.parse_args(["crawl", "http://127.0.0.1:9/", "--scroll-delay", "250"])
    assert render_options(args) == {"scroll": {"delay_ms": 250}}
    assert render_options(parser.parse_args(["crawl", "http://127.0.0.1:9/"])) == {}


def test_too_many_scrolls_is_the_apis_one_line_and_exit_2(tmp_path: Path) -> None:
    args = ["crawl", "http://127.0.0.1:9/", "--render", "always", "--scroll", "51"]
    result = run_cli(args, tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "scroll.max_scrolls: Input should be less than or equal to 50" in lines[0]


@pytest.mark.parametrize("bad", ["no-colon", ": empty name", "Two Words: x"])
def test_a_bad_header_is_one_line_and_exit_2(bad: str, tmp_path: Path) -> None:
    result = run_cli(["crawl", "http://127.0.0.1:9/", "--header", bad], tmp_path, timeout=30)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "--header: must be 'Name: value'" in lines[0]


@pytest.mark.e2e
def test_request_options_reach_the_crawler_and_export_writes_the_crawl_again(
    tmp_path: Path,
) -> None:
    with _site() as (url, seen):
        args = ["crawl", url, "--allow-cidr", "127.0.0.0/8", "--out", "first", "--no-sitemaps"]
        args += ["--exclude", "/skip/", "--include", r"/(a|b|private/c)?$", "--no-robots"]
        args += ["--header", "Accept-Language: fr-CH", "--user-agent", "parity-bot/1.0"]
        result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    pages = {p for p, _, _ in seen if p != "/robots.txt"}
    assert pages == {"/", "/a", "/b", "/private/c"}, "excluded page skipped, robots ignored"
    assert {ua for _, ua, _ in seen} == {"parity-bot/1.0"}
    assert {lang for p, _, lang in seen if p != "/robots.txt"} == {"fr-CH"}

    crawl_id = next(w for w in result.stdout.split() if w.startswith("cr_"))
    again = run_cli(["export", crawl_id, "--out", "again"], tmp_path, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().endswith("(pages.jsonl, crawl.warc.gz)")
    first = (tmp_path / "first" / "pages.jsonl").read_text()
    assert (tmp_path / "again" / "pages.jsonl").read_text() == first
    assert len([json.loads(line) for line in first.splitlines()]) == 4
    warc = (tmp_path / "again" / "crawl.warc.gz").read_bytes()
    assert warc == (tmp_path / "first" / "crawl.warc.gz").read_bytes()


def test_export_of_an_unknown_crawl_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli(["export", "cr_" + "0" * 32, "--out", "o"], tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "no crawl" in lines[0]
