"""``sparky web``'s handlers through Starlette's TestClient, over real stores: the sample export and a small
export of our own (tests/data/web: a message holding ``<script>`` and ``<img onerror>``, Markdown, a
dropped "Thanks!" between two kept messages), ingested with the real CLI and the real model."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from conftest import ROOT, SAMPLE, read_progress
from support.postgres import fresh_schema, minilm, postgres_database, postgres_server, run_ingest  # noqa: F401
from sparky.cli import cli
from sparky.cli.web import is_loopback
from sparky.locking import FileLock
from sparky.search import open_for_search
from sparky.web import WebConfig, create_app
from sparky.web.app import HERE
from sparky.stores.reads import SORTS, Reads
from sparky.web.security import CSP
from sparky.web.views import LISTED

WEB_EXPORT = ROOT / "tests" / "data" / "web" / "conversations.json"
WEB_CONVERSATION = "web-escaping-check"
BASE = "http://127.0.0.1"


class WebStore(NamedTuple):
    """A store holding the sample and the web export, the sample's progress file beside it, and the
    store's counts (``stats()``)."""

    db: Path
    progress: Path
    stats: dict


@pytest.fixture(scope="session")
def web_store(tmp_path_factory) -> WebStore:
    folder = tmp_path_factory.mktemp("web-store")
    db, progress = folder / "sparky_memory.db", folder / "sparky_ingestion_progress.json"
    for export, progress_file in ((SAMPLE, progress), (WEB_EXPORT, folder / "web-progress.json")):
        result = CliRunner().invoke(cli, ["ingest", str(export), "--db", str(db), "--progress-file",
                                          str(progress_file), "--quiet"])
        assert result.exit_code == 0, result.output
    store = open_for_search(str(db))
    try:
        return WebStore(db, progress, store.stats())
    finally:
        store.close()


def client_for(config: WebConfig) -> TestClient:
    return TestClient(create_app(config), base_url=BASE)


@pytest.fixture(scope="module")
def client(web_store) -> Iterator[TestClient]:
    with client_for(WebConfig(str(web_store.db), web_store.progress)) as test_client:
        yield test_client


def section(html: str, element_id: str) -> str:
    """The HTML of the element with this id, up to its closing tag (the pages do not nest these)."""
    match = re.search(rf'<(\w+)[^>]* id="{element_id}"[^>]*>(.*?)</\1>', html, re.S)
    assert match, f"no #{element_id} in the page"
    return match.group(2)


def hits(html: str) -> list[str]:
    """The roles of the hit sides of the exchanges shown."""
    return re.findall(r'class="side (user|assistant) hit"', html)


# security: every page


def test_every_answer_carries_a_strict_csp_and_the_pages_run_no_inline_script(client):
    for path in ("/", "/?q=docker", "/timeline", "/conversations", "/status", "/nope",
                 f"/conversation?source=chatgpt&id={WEB_CONVERSATION}"):
        answer = client.get(path)
        assert answer.headers["content-security-policy"] == CSP, path
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        scripts = re.findall(r"<script\b[^>]*>", answer.text)
        assert scripts == ['<script src="/static/htmx.min.js" defer>'], (path, scripts)
        assert "style=" not in answer.text and "<style" not in answer.text, path
        assert not re.search(r'(src|href)="(https?:)?//', answer.text.replace(
            'href="https://developer.mozilla.org', ""))  # nothing loaded from elsewhere
    assert "script-src 'self'" in CSP and "unsafe" not in CSP and "default-src 'none'" in CSP


def test_htmx_is_served_from_the_package_pinned_with_its_license(client):
    answer = client.get("/static/htmx.min.js")
    assert answer.status_code == 200
    assert answer.text.startswith("/*! htmx 2.0.4 ") and "0BSD" in answer.text.splitlines()[0]
    assert (HERE / "static" / "htmx.LICENSE").read_text().startswith("Zero-Clause BSD")
    assert client.get("/code.css").headers["content-type"].startswith("text/css")


# search


def test_a_search_shows_question_and_answer_exchanges_with_the_passage_marked(client):
    page = client.get("/", params={"q": "zebrafish gallery"}).text
    results = section(page, "results")
    assert results.count('<li class="exchange">') == 2  # two questions, each with its answer
    assert hits(results) == ["user", "user"]
    assert "<mark>zebrafish</mark> <mark>gallery</mark>" in results
    assert 'class="side assistant"' in results  # the answer beneath each question
    assert "Zebrafish gallery &lt;b&gt;captions&lt;/b&gt;" in results  # the title is text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;sparky-xss&#34;)&lt;/script&gt;" in results
    link = re.search(r'class="open" href="([^"]+)"', results).group(1).replace("&amp;", "&")
    assert link.startswith(f"/conversation?source=chatgpt&id={WEB_CONVERSATION}&hit=")
    assert "back=q%3Dzebrafish%2Bgallery" in link and re.search(r"#m\d+$", link)


def test_a_hit_on_an_answer_shows_the_question_before_it(client):
    page = client.get("/", params={"q": "escape the captions before inserting", "role": "assistant"}).text
    results = section(page, "results")
    assert hits(results) and set(hits(results)) == {"assistant"}
    assert results.index('class="side user"') < results.index('class="side assistant hit"')


def test_an_htmx_request_gets_the_results_alone_and_the_address_of_the_whole_page(client):
    answer = client.get("/", params={"q": "docker socket", "source": "chatgpt", "k": "10"},
                        headers={"HX-Request": "true"})
    assert "<html" not in answer.text and '<li class="exchange">' in answer.text
    assert answer.headers["hx-push-url"] == "/?q=docker+socket&source=chatgpt"
    assert "HX-Request" in answer.headers["vary"]
    restore = client.get("/", params={"q": "docker"}, headers={"HX-Request": "true",
                                                               "HX-History-Restore-Request": "true"})
    assert "<html" in restore.text  # a history restore needs the whole page


def test_filters_that_leave_nothing_say_no_good_match_plainly(client):
    page = client.get("/", params={"q": "docker permission denied", "source": "claude"}).text
    assert "No good match for “docker permission denied” with these filters." in page
    assert '<li class="exchange">' not in page
    assert 'value="claude" selected' in page  # the form shows what was asked


def test_date_and_conversation_filters_narrow_the_results(client):
    within = section(client.get("/", params={"q": "zebrafish", "since": "2023-05-13", "until": "2023-05-13"}).text,
                     "results")
    assert hits(within)
    before = client.get("/", params={"q": "zebrafish", "until": "2023-05-12"}).text
    assert WEB_CONVERSATION not in section(before, "results")
    only = section(client.get("/", params={"q": "docker", "conversation": "Zebrafish"}).text, "results")
    assert set(re.findall(r"id=([\w-]+)&amp;hit", only)) <= {WEB_CONVERSATION}


def test_a_search_that_cannot_run_says_why(client):
    assert "not a date" in client.get("/", params={"q": "docker", "since": "last week"}).text
    assert "no conversation has the id or a title containing" in client.get(
        "/", params={"q": "docker", "conversation": "no such conversation"}).text
    assert "Type what you remember" in client.get("/", params={"q": "   "}).text


def test_more_results_asks_for_ten_more(client):
    page = client.get("/", params={"q": "error", "mode": "keyword", "k": "3"}).text
    assert 'href="/?q=error&amp;mode=keyword&amp;k=13"' in page


# conversation


def test_the_conversation_page_marks_the_hit_and_renders_markdown_safely(client):
    page = client.get("/conversation", params={"source": "chatgpt", "id": WEB_CONVERSATION, "hit": "0",
                                               "back": "q=zebrafish"}).text
    assert re.search(r'<section id="m0" class="message user hit" aria-current="true">', page)
    assert page.count(' hit"') == 1
    assert 'href="/?q=zebrafish"' in page  # back to the search
    assert "&lt;script&gt;alert(&quot;sparky-xss&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(&quot;sparky-img&quot;)&gt;" in page
    assert "<script>alert" not in page and "<img" not in page
    assert '<code class="language-python"><span class="kn">from</span>' in page  # highlighted by Pygments
    assert "javascript:" not in re.sub(r"\[this one\]\(javascript:alert\('sparky-link'\)\)", "", page)
    assert ('<a href="https://developer.mozilla.org/en-US/docs/Glossary/Cross-site_scripting"'
            ' rel="noopener noreferrer nofollow">the MDN page on XSS</a>') in page
    assert "<table>" in page and "<td><code>&lt;b&gt;</code></td>" in page
    assert '<p class="left-out">1 part left out</p>' in page  # the dropped "Thanks!"
    assert page.index('id="m1"') < page.index("1 part left out") < page.index('id="m3"')


def test_an_unknown_conversation_is_a_404_page(client):
    answer = client.get("/conversation", params={"source": "chatgpt", "id": "<nope>"})
    assert answer.status_code == 404 and "&lt;nope&gt;" in answer.text


# timeline and the conversation list


def test_the_timeline_charts_months_and_lists_the_conversations_of_one(client, web_store):
    page = client.get("/timeline").text
    assert "<svg" in page and 'class="period' in page
    month = client.get("/timeline", params={"by": "month", "period": "2023-05"}).text
    listed = section(month, "period")
    assert "2023-05:" in listed and "Zebrafish gallery &lt;b&gt;captions&lt;/b&gt;" in listed
    assert 'class="period chosen"' in month
    week = client.get("/timeline", params={"by": "week", "period": "2023-05-08"}).text
    assert "Zebrafish gallery" in section(week, "period")
    assert 'id="period"' not in client.get("/timeline", params={"period": "May"}).text
    store = open_for_search(str(web_store.db))
    try:
        counts = Reads(store).day_counts()
        stats = store.stats()
    finally:
        store.close()
    assert sum(counts.messages.values()) + counts.undated_messages == stats["messages"]
    assert sum(counts.conversations.values()) + counts.undated_conversations == stats["conversations"]


def test_the_conversation_list_searches_titles_and_sorts_by_date_or_size(client, web_store):
    total = web_store.stats["conversations"]
    assert f"{total} conversations" in client.get("/conversations").text
    docker = client.get("/conversations", params={"title": "docker"}, headers={"HX-Request": "true"})
    assert "<html" not in docker.text and "1 conversation matching “docker”" in docker.text
    assert docker.headers["hx-push-url"] == "/conversations?title=docker"
    largest = client.get("/conversations", params={"sort": "largest"}).text
    sizes = [int(size.replace(",", "")) for size in re.findall(
        r'<td class="number">\d+</td>\s*<td class="number">([\d,]+)</td>', largest)]
    assert len(sizes) == min(total, LISTED) and sizes == sorted(sizes, reverse=True)
    most = client.get("/conversations", params={"sort": "most messages"}).text
    counts = [int(count) for count in re.findall(r'<td class="number">(\d+)</td>\s*<td class="number">', most)]
    assert len(counts) == min(total, LISTED) and counts == sorted(counts, reverse=True)
    newest = re.findall(r"<td>(\d{4}-\d\d-\d\d)</td>\s*<td>", client.get("/conversations").text)
    assert newest == sorted(newest, reverse=True)
    assert "0 conversations matching" in client.get("/conversations", params={"title": "zzz-none"}).text


# ingestion status


def test_the_status_page_reports_the_progress_file_and_the_store(client, web_store):
    page = client.get("/status").text
    stats = read_progress(web_store.progress)["stats"]
    assert "Ingestion complete." in page
    assert f"{stats['total_messages']} of {stats['total_messages']} (100.0%)" in page
    assert f"{stats['total_conversations']} of {stats['total_conversations']} (100.0%)" in page
    assert f"{web_store.stats['conversations']} conversations, {web_store.stats['messages']} messages" in page
    panel = client.get("/status", headers={"HX-Request": "true"}).text
    assert panel.lstrip().startswith('<section id="status" hx-get="/status" hx-trigger="every 2s"')


def test_the_status_page_says_when_an_ingestion_holds_the_progress_file(web_store, tmp_path):
    progress = tmp_path / "sparky_ingestion_progress.json"
    shutil.copy(web_store.progress, progress)
    with client_for(WebConfig(str(web_store.db), progress)) as test_client:
        with FileLock(progress, "progress file"):  # what a running ingester holds
            running = test_client.get("/status").text
        assert re.search(r"An ingestion is running \(pid \d+\)", running)
        assert "An ingestion is running" not in test_client.get("/status").text


def test_without_a_store_yet_the_pages_say_so_and_open_it_once_it_is_there(web_store, tmp_path):
    db = tmp_path / "later.db"
    with client_for(WebConfig(str(db), tmp_path / "none.json")) as test_client:
        assert "no memory store at" in test_client.get("/", params={"q": "docker"}).text
        status = test_client.get("/status").text
        assert "No progress file at" in status and "no memory store at" in status
        assert test_client.get("/timeline").status_code == 503
        db.touch()  # an ingester has just created it: no schema yet, and this reader writes none
        assert "being created" in test_client.get("/conversations").text
        assert db.stat().st_size == 0
        shutil.copy(web_store.db, db)
        assert '<li class="exchange">' in test_client.get("/", params={"q": "docker socket"}).text


# who may ask


def test_a_token_is_required_on_every_request_when_set(web_store):
    config = WebConfig(str(web_store.db), web_store.progress, token="s3cret-token", loopback_only=False)
    with client_for(config) as test_client:
        refused = test_client.get("/status")
        assert refused.status_code == 401 and "s3cret" not in refused.text
        assert refused.headers["content-security-policy"] == CSP
        assert test_client.get("/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert test_client.get("/status", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        entry = test_client.get("/timeline", params={"token": "s3cret-token", "by": "week"}, follow_redirects=False)
        assert entry.status_code == 303 and entry.headers["location"] == "/timeline?by=week"
        cookie = entry.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert test_client.get("/timeline?by=week").status_code == 200  # the cookie is kept by the client
        test_client.cookies.clear()
        assert test_client.get("/timeline", params={"token": "wrong"}).status_code == 401


def test_on_loopback_a_request_for_another_host_name_is_refused(client):
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 421
    assert client.get("/", headers={"Host": "localhost:8765"}).status_code == 200
    assert client.get("/", headers={"Host": "[::1]:8765"}).status_code == 200


def test_the_command_refuses_to_listen_beyond_loopback_without_allow_remote_and_a_token(web_store, monkeypatch):
    monkeypatch.delenv("SPARKY_WEB_TOKEN", raising=False)
    runner = CliRunner()
    refused = runner.invoke(cli, ["web", "--host", "0.0.0.0", "--db", str(web_store.db)])
    assert refused.exit_code == 2 and "--allow-remote" in refused.output
    no_token = runner.invoke(cli, ["web", "--host", "0.0.0.0", "--allow-remote", "--db", str(web_store.db)])
    assert no_token.exit_code == 2 and "SPARKY_WEB_TOKEN" in no_token.output
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


# the PostgreSQL store


@pytest.fixture(scope="module")
def postgres_store(postgres_database, minilm, tmp_path_factory) -> Iterator[str]:  # noqa: F811
    """The same two exports ingested into a PostgreSQL store."""
    with fresh_schema(postgres_database) as url:
        for export in (SAMPLE, WEB_EXPORT):
            run_ingest(url, export, tmp_path_factory.mktemp("web-pg"), minilm)
        yield url


def test_the_reads_answer_the_same_over_postgresql_as_over_sqlite(web_store, postgres_store):
    answers = []
    for url in (str(web_store.db), postgres_store):
        store = open_for_search(url)
        try:
            reads = Reads(store)
            conversation = reads.conversation("chatgpt", WEB_CONVERSATION)
            answers.append((
                reads.day_counts(),
                [[(item.source, item.conversation_id, item.title, item.created_at, item.latest_at, item.messages,
                   item.characters) for item in reads.conversations(sort=sort, limit=7, offset=3).conversations]
                 for sort in SORTS],
                reads.conversations("zebrafish", since=1684000000.0, until=1684000001.0).total,
                [(item.key, item.role, item.created_at, item.position, item.text)
                 for item in reads.transcript(conversation.row)],
            ))
        finally:
            store.close()
    assert answers[0] == answers[1]
    assert answers[0][2] == 1 and len(answers[0][3]) == 4


def test_the_pages_read_a_postgresql_store(web_store, postgres_store):
    with client_for(WebConfig(postgres_store, web_store.progress)) as test_client:
        assert hits(section(test_client.get("/", params={"q": "zebrafish gallery"}).text, "results"))
        page = test_client.get("/conversation", params={"source": "chatgpt", "id": WEB_CONVERSATION, "hit": "3"}).text
        assert 'id="m3" class="message user hit"' in page and "1 part left out" in page
        assert "2023-05: 1 conversation, 4 messages" in test_client.get("/timeline", params={"period": "2023-05"}).text
        status = test_client.get("/status").text
        assert f"{web_store.stats['conversations']} conversations, {web_store.stats['messages']} messages" in status
