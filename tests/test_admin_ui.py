"""The admin UI in a real headless Chromium (Debian's `chromium`, driven by Python playwright),
against a live API with its embedded worker and the fake model server. Screenshots of every
page go to test-output/admin/."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from agents.settings import Settings
from db import repo
from db.models import Job, Step
from db.session import Database
from tests.api_server import running_api, wait_for_job
from tests.db_fixtures import sqlite_url

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None

if sync_playwright is None or CHROMIUM is None:
    pytest.skip("the browser tests need Python playwright (pip install playwright) and Debian's chromium "
                "(apt-get install -y chromium)", allow_module_level=True)

# The suite shares 2 cores with model processes: a page may take more than playwright's 5 s.
expect.set_options(timeout=20_000)

SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "admin"
XSS = '<script>window.__xss = 1</script><img src="x" onerror="window.__xss = 2">'


@pytest.fixture(scope="module")
def site(tmp_path_factory, fake_llm_session):
    fake = fake_llm_session
    if not fake.alive:
        fake.restart()
    fake.reset(config=True)
    fake.update(timing=True, decode_s_per_token=0.002)  # a write takes seconds: there is something to watch
    tmp = tmp_path_factory.mktemp("admin-ui")
    settings = Settings(longform_data_dir=str(tmp), database_url=sqlite_url(tmp), llm_endpoints=fake.base_url,
                        require_api_keys="always", admin_session_secret="test-secret")
    db = Database(settings.database_url)
    with db.session() as session:
        admin_key, _ = repo.create_api_key(session, "ops", is_admin=True)
        user_key, user_row = repo.create_api_key(session, "alice")
        user_id = user_row.id
    SHOTS.mkdir(parents=True, exist_ok=True)
    with running_api(settings) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield {"url": url, "fake_url": fake.base_url, "admin_key": admin_key, "user_key": user_key, "user_id": user_id, "db": db,
               "browser": browser}
        browser.close()
    fake.reset(config=True)


def login(site, key: str):
    context = site["browser"].new_context(base_url=site["url"], accept_downloads=True)
    page = context.new_page()
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login$"))
    page.fill('input[name="api_key"]', key)
    page.click('#login-form button[type="submit"]')
    expect(page.locator("h1")).to_have_text("Dashboard")
    return page


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def rest(site, key: str) -> httpx.Client:
    return httpx.Client(base_url=site["url"], headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_login_and_a_key_sees_only_its_own_jobs(site):
    with rest(site, site["admin_key"]) as admin:
        foreign = admin.post("/v1/jobs", json={"kind": "chat", "params": {"messages": [
            {"role": "user", "content": "admin only"}]}}).json()["id"]
        wait_for_job(admin, foreign)
    context = site["browser"].new_context(base_url=site["url"])
    page = context.new_page()
    page.goto("/admin/jobs")
    expect(page).to_have_url(re.compile(r"/admin/login$"))
    shot(page, "login")
    page.fill('input[name="api_key"]', "lf_not-a-key")
    page.click('#login-form button[type="submit"]')
    expect(page.locator(".flash.error")).to_contain_text("invalid or revoked API key")
    context.close()

    page = login(site, site["user_key"])
    shot(page, "dashboard-user")
    page.goto("/admin/jobs")
    expect(page.locator("h1")).to_contain_text("Jobs")
    assert foreign[:12] not in page.content()
    response = page.goto(f"/admin/jobs/{foreign}")
    assert response.status == 404
    page.context.close()

    page = login(site, site["admin_key"])
    page.goto("/admin/jobs")
    expect(page.locator(f'a[href="/admin/jobs/{foreign}"]')).to_be_visible()
    shot(page, "jobs-admin")
    page.goto("/admin/")
    expect(page.locator("h3", has_text="Model endpoints")).to_be_visible()
    endpoint = page.locator("tr", has=page.locator("td", has_text=site["fake_url"]))
    expect(endpoint.locator(".ok")).to_have_text("up")  # probed, and the model calls of this process counted
    shot(page, "dashboard-admin")
    page.context.close()


def test_submit_a_write_job_from_the_form_and_watch_it_finish_live(site):
    page = login(site, site["user_key"])
    page.goto("/admin/submit?kind=write")
    shot(page, "submit-write")
    page.fill("#f-instruction", "Write an essay about rivers and the towns they made, about 2000 words.")
    page.fill("#f-target_words", "2000")
    page.click("#submit-job")
    expect(page.locator("h1")).to_contain_text("write job")
    job_id = page.url.rsplit("/", 1)[-1]
    # Live: the words-written bar and the sections appear while it runs, from the event stream.
    expect(page.locator("#progress-text")).to_contain_text("words written", timeout=30_000)
    expect(page.locator(".view-plan")).to_be_visible()
    shot(page, "write-running")
    expect(page.locator("#status-badge")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#main-text")).to_be_visible()
    expect(page.locator(".view-plan li").first).to_be_visible()
    assert page.locator("table.steps tr").count() > 2 and page.locator(".timeline svg").count() == 2
    shot(page, "write-succeeded")
    with rest(site, site["user_key"]) as client:
        job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["owner"] == site["user_id"]
    page.context.close()


def test_cancel_one_then_retry_it(site):
    with rest(site, site["user_key"]) as client:
        job_id = client.post("/v1/jobs", json={"kind": "write", "params": {
            "instruction": "Write a long history of bridges.", "target_words": 6000}}).json()["id"]
    page = login(site, site["user_key"])
    page.goto(f"/admin/jobs/{job_id}")
    expect(page.locator("#status-badge")).to_have_text(re.compile("queued|running"))
    page.click("#cancel-job")
    expect(page.locator("#status-badge")).to_have_text("cancelled", timeout=30_000)
    shot(page, "job-cancelled")
    page.select_option('select[name="mode"]', "reuse")
    page.click("#retry-job")
    expect(page.locator(".flash")).to_contain_text("queued again")
    expect(page.locator("#status-badge")).to_have_text("succeeded", timeout=120_000)
    shot(page, "job-retried")
    page.context.close()


def test_bulk_cancel_from_the_jobs_list(site):
    with rest(site, site["user_key"]) as client:
        ids = [client.post("/v1/jobs", json={"kind": "write", "priority": 9, "params": {
            "instruction": f"Write about lighthouse number {i}.", "target_words": 6000}}).json()["id"] for i in range(2)]
    page = login(site, site["user_key"])
    page.goto("/admin/jobs?q=lighthouse")
    for job_id in ids:
        page.check(f'input[name="job"][value="{job_id}"]')
    page.click("#bulk-cancel")
    expect(page.locator(".flash")).to_contain_text("cancel asked for 2 job(s)")
    with rest(site, site["user_key"]) as client:
        for job_id in ids:
            assert wait_for_job(client, job_id)["status"] == "cancelled"
    page.context.close()


def test_upload_a_document_and_open_its_summarization_tree(site, tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("\n\n".join(f"Chapter {i}. The river rose and the town of Weir moved its mill again. "
                                f"Mara kept the ledger of floods, year {1800 + i}." * 30 for i in range(12)))
    page = login(site, site["user_key"])
    page.goto("/admin/documents")
    page.set_input_files('input[name="file"]', str(book))
    page.fill('input[name="name"]', "The <b>Weir</b> ledger")
    page.click("#upload")
    expect(page.locator(".flash")).to_contain_text("stored")
    expect(page.locator("td", has_text="The <b>Weir</b> ledger")).to_be_visible()  # shown as text
    document_id = page.locator("td code").first.inner_text()
    shot(page, "documents")
    page.goto("/admin/submit?kind=summarize")
    page.fill("#f-document_id", document_id)
    page.fill("#f-chunk_size", "512")
    page.fill("#f-target_words", "120")
    page.click("#submit-job")
    expect(page.locator("#status-badge")).to_have_text("succeeded", timeout=120_000)
    # The live page reloads itself once the job ends; open the finished page before clicking,
    # or that reload can wipe the node just loaded.
    page.goto(page.url)
    expect(page.locator("#summary-tree")).to_be_visible()
    node = page.locator("#summary-tree button.node").first
    node_id = node.inner_text().split(" · ")[0]
    node.click()
    expect(page.locator("#node-text h4")).to_have_text(node_id)
    expect(page.locator("#node-text pre.node-text")).not_to_be_empty()
    shot(page, "summarize-tree")
    page.goto("/admin/jobs?q=Weir")  # the search finds a job by its document's name
    expect(page.locator("td.about", has_text=document_id)).to_be_visible()
    page.context.close()


def test_download_a_dataset_export(site):
    with rest(site, site["user_key"]) as client:
        dataset_id = client.post("/v1/datasets", json={
            "items": [{"instruction": "Write a short story about a lantern.", "target_words": 300},
                      {"instruction": "Write a short essay about tides.", "target_words": 300}],
            "formats": ["longwriter", "alpaca"]}).json()["id"]
        assert wait_for_job(client, dataset_id, timeout=120)["status"] == "succeeded"
    page = login(site, site["user_key"])
    page.goto(f"/admin/jobs/{dataset_id}")
    expect(page.locator(".view-stats svg.chart").first).to_be_visible()
    shot(page, "dataset")
    with page.expect_download() as info:
        page.click('a.export-link[data-format="alpaca"]')
    download = info.value
    assert download.suggested_filename == f"{dataset_id}-alpaca.jsonl"
    lines = Path(download.path()).read_text().splitlines()
    with rest(site, site["user_key"]) as client:
        same = client.get(f"/v1/datasets/{dataset_id}/export", params={"format": "alpaca"}).text.splitlines()
    assert lines == same and all("instruction" in json.loads(line) for line in lines)
    page.context.close()


def test_model_output_and_user_input_never_run_as_script(site):
    """A job whose result, plan, steps and params hold <script> and <img onerror>: shown as text."""
    with site["db"].session() as session:
        job, _ = repo.create_job(session, "write", {"instruction": XSS, "target_words": 100}, owner=site["user_id"])
        job.status, job.progress = "succeeded", 1.0
        job.result = {"text": XSS, "plan": [{"title": XSS, "main_point": XSS, "words": 50}], "word_count": 3,
                      "target_words": 100}
        job.error = None
        session.add(Step(job_id=job.id, key="section/1", status="succeeded", output={"text": XSS},
                         error=XSS, finish_reason="stop"))
        job_id = job.id
    with site["db"].session() as session:
        tree_job, _ = repo.create_job(session, "summarize", {"document_id": "x"}, owner=site["user_id"])
        tree_job.status = "succeeded"
        tree_job.result = {"summary": XSS, "tree": {"nodes": [{"id": "chunk/0/0", "level": 0, "children": [],
                                                              "words": 3, "calls": 1}], "root": "chunk/0/0"}}
        session.add(Step(job_id=tree_job.id, key="chunk/0/0", status="succeeded", output={"text": XSS}))
        tree_id = tree_job.id
    page = login(site, site["user_key"])
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"/admin/jobs/{job_id}")
    expect(page.locator("#main-text")).to_have_text(XSS)  # the markup, as text
    assert page.locator(".view-plan strong").first.inner_text() == XSS
    page.goto("/admin/jobs")
    expect(page.locator("td.about", has_text="<script>window.__xss")).to_be_visible()
    page.goto(f"/admin/jobs/{tree_id}")
    page.locator("#summary-tree button.node").first.click()
    expect(page.locator("#node-text pre")).to_have_text(XSS)
    page.goto(f"/admin/submit?kind=write")
    page.fill("#f-instruction", "   ")  # refused: the form comes back with the error, escaped
    page.fill("#f-target_words", "100")
    page.click("#submit-job")
    expect(page.locator(".flash.error")).to_contain_text("instruction")
    shot(page, "xss-probe")
    assert page.evaluate("typeof window.__xss") == "undefined" and not dialogs
    assert page.locator("main script").count() == 0 and page.locator("main img").count() == 0
    page.context.close()
