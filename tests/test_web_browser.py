"""``sparky web`` in a real browser: Debian's chromium driven by playwright (no browser is downloaded).

The server is the real command, started on a free loopback port; it prints its address once it listens.
Every wait is on the page's elements (or on the ingester's trace file), never on the clock. Screenshots of
each page go to the test's temp folder; with ``SPARKY_UPDATE_SCREENSHOTS=1`` they also replace those in
docs/screenshots/ (shown in the README).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT, sparky_subprocess, wait_for_trace
from sparky.web.views import LISTED
from test_web import WEB_CONVERSATION, web_store  # noqa: F401 - the session's store, shared with test_web

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")
expect = sync_api.expect

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"no {CHROMIUM}: install Debian's chromium (apt-get install -y chromium; make test does)")
    with sync_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def start_web(db: Path, progress: Path, cwd: Path) -> tuple[subprocess.Popen, str]:
    """``sparky web`` on a free loopback port, and its address (printed once the port listens)."""
    process = sparky_subprocess(["web", "--port", "0", "--db", str(db), "--progress-file", str(progress)], cwd)
    line = process.stdout.readline()
    if not line.startswith("Sparky web: "):
        process.kill()
        pytest.fail(f"sparky web did not start: {line}{process.communicate()[1]}")
    return process, re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.communicate()


@pytest.fixture(scope="module")
def server(web_store, tmp_path_factory) -> Iterator[str]:  # noqa: F811
    process, url = start_web(web_store.db, web_store.progress, tmp_path_factory.mktemp("web-cwd"))
    yield url
    stop(process)


@dataclass
class Watched:
    """A page with everything it does that it must not: dialogs opened, errors in its console."""

    page: object
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def watched(browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    found = Watched(context.new_page())
    found.page.on("dialog", lambda dialog: (found.dialogs.append(dialog.message), dialog.dismiss()))
    found.page.on("console", lambda message: found.errors.append(message.text) if message.type == "error" else None)
    found.page.on("pageerror", lambda error: found.errors.append(str(error)))
    yield found
    context.close()


def screenshot(page: object, folder: Path, name: str) -> None:
    """The page whole in the test's folder (and in docs/screenshots with SPARKY_UPDATE_SCREENSHOTS=1)."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("SPARKY_UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(exist_ok=True)
        shutil.copy(path, DOCS_SCREENSHOTS / path.name)


def test_search_filter_open_a_hit_and_follow_the_timeline(server, watched, tmp_path):
    page = watched.page
    page.goto(server)
    page.fill("#q", "zebrafish gallery")  # htmx asks as the user types; no submit
    expect(page.locator(".exchange").first).to_be_visible()
    expect(page.locator(".side.hit mark").first).to_have_text(re.compile("zebrafish", re.I))
    expect(page).to_have_url(re.compile(r"\?q=zebrafish\+gallery$"))
    screenshot(page, tmp_path, "search")

    page.select_option("select[name=source]", "claude")  # the sample and our export are ChatGPT's
    expect(page.locator(".no-match")).to_have_text(re.compile("No good match"))
    expect(page).to_have_url(re.compile(r"source=claude"))
    page.select_option("select[name=source]", "chatgpt")
    page.select_option("select[name=role]", "user")
    expect(page).to_have_url(re.compile(r"role=user&source=chatgpt|source=chatgpt.*role=user|role=user.*source=chatgpt"))
    expect(page.locator(".exchange").first).to_be_visible()
    assert page.locator(".side.hit").count() == page.locator(".side.user.hit").count() > 0

    page.locator(".exchange a.open").first.click()
    hit = page.locator(".message.hit")
    expect(hit).to_have_count(1)
    expect(hit).to_be_in_viewport()
    assert page.url.endswith("#" + hit.get_attribute("id"))
    expect(page.locator(".left-out")).to_have_text("1 part left out")
    assert page.locator("pre code .kn").count() > 0  # the Python fence, highlighted
    screenshot(page, tmp_path, "conversation")

    page.click("a.back")
    expect(page.locator("#q")).to_have_value("zebrafish gallery")
    expect(page.locator(".exchange").first).to_be_visible()

    page.click("nav >> text=Timeline")
    page.locator('a.period[href*="period=2023-05"]').click()
    listed = page.locator("#period")
    expect(listed).to_contain_text("Zebrafish gallery <b>captions</b>")
    screenshot(page, tmp_path, "timeline")
    listed.get_by_role("link", name="Zebrafish gallery <b>captions</b>").click()
    expect(page.locator("h1")).to_have_text("Zebrafish gallery <b>captions</b>")
    assert watched.dialogs == [] and watched.errors == []


def test_a_message_with_script_and_img_onerror_shows_as_text_and_runs_nothing(server, watched, tmp_path):
    page = watched.page
    page.goto(f"{server}conversation?source=chatgpt&id={WEB_CONVERSATION}&hit=0#m0")
    body = page.locator("#m0 .body")
    expect(body).to_contain_text('<script>alert("sparky-xss")</script>')
    expect(body).to_contain_text('<img src=x onerror=alert("sparky-img")>')
    assert page.locator("main script, main img, main iframe").count() == 0
    assert page.locator('a[href^="javascript:"]').count() == 0
    expect(page.locator("#m1")).to_contain_text("[this one](javascript:alert('sparky-link'))")
    assert watched.dialogs == [], watched.dialogs
    assert watched.errors == [], watched.errors  # a CSP violation would be one too
    screenshot(page, tmp_path, "escaping")


def test_the_conversation_list_searches_titles_and_sorts(server, watched, web_store, tmp_path):  # noqa: F811
    page = watched.page
    total = web_store.stats["conversations"]
    page.goto(f"{server}conversations")
    expect(page.locator(".count")).to_have_text(re.compile(f"^{total} conversations"))
    page.fill("#title", "docker")
    expect(page.locator(".count")).to_have_text(re.compile("1 conversation matching “docker”"))
    expect(page.locator("table.conversations tbody tr")).to_have_count(1)
    page.fill("#title", "")
    page.select_option("select[name=sort]", "largest")
    expect(page).to_have_url(re.compile(r"sort=largest"))
    expect(page.locator("table.conversations tbody tr")).to_have_count(min(total, LISTED))
    screenshot(page, tmp_path, "conversations")
    assert watched.dialogs == [] and watched.errors == []


def test_the_status_page_follows_a_running_ingestion(browser, watched, small_generated_export, tmp_path):
    page = watched.page
    db, progress, trace = tmp_path / "memory.db", tmp_path / "progress.json", tmp_path / "trace"
    process, url = start_web(db, progress, tmp_path)  # neither the store nor the progress file exists yet
    try:
        page.goto(f"{url}status")
        expect(page.locator("#status")).to_contain_text("No progress file at")
        expect(page.locator("#status")).to_contain_text("no memory store at")
        ingest = sparky_subprocess(["ingest", str(small_generated_export), "--db", str(db), "--progress-file",
                                    str(progress), "--batch-size", "16"], tmp_path,
                                   env={"SPARKY_TRACE_FILE": str(trace), "SPARKY_TRACE_PAUSE": "after_commit:600"})
        try:
            wait_for_trace(trace, "after_commit", 1, ingest)  # paused after its first batch, locks held
            expect(page.locator(".state.running")).to_contain_text(f"An ingestion is running (pid {ingest.pid})")
            expect(page.locator("#status")).to_contain_text(re.compile(r"[1-9]\d* messages in [1-9]\d* chunks"))
            expect(page.locator("#status")).to_contain_text(re.compile(r"of [1-9][\d,]* \("))
            screenshot(page, tmp_path, "status")
        finally:
            ingest.send_signal(signal.SIGTERM)  # a clean stop: it ends the pause too
            ingest.communicate()
        assert ingest.returncode == 130
        expect(page.locator(".state.stopped")).to_contain_text("Resume with: sparky ingest")
        assert watched.dialogs == [] and watched.errors == []
    finally:
        stop(process)
