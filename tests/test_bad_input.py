"""Bad input gets a 4xx with a message, stores nothing, and loses nothing already stored.

Uploads (empty, over the limit with and without Content-Length, wrong content type, not UTF-8,
NUL bytes), JSON bodies with lone surrogates or NUL, NUL in URLs (a 500 on PostgreSQL before),
right-to-left marks and combining characters (must round-trip), names that look like paths
(stored as names; nothing written outside the data directory), and a 20 MB document on one line
(accepted under the 20 MiB limit, and chunked in bounded time). The API runs without a worker:
jobs stay queued, no model is called.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from agents.chunking import counted_chunks
from agents.settings import Settings
from api.app import create_app
from db.models import Document, Job
from db.session import Database
from tests.api_server import running_api
from tests.db_fixtures import *  # noqa: F403 (database_url: SQLite, and PostgreSQL under the marker)

LIMIT = 256 * 1024
TEXT = {"Content-Type": "text/plain"}
CHAT = {"kind": "chat", "params": {"messages": [{"role": "user", "content": "hi"}]}}


@pytest.fixture
def data_dir(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def settings(data_dir, database_url, fake_llm):
    return Settings(longform_data_dir=str(data_dir), database_url=database_url, llm_endpoints=fake_llm.base_url,
                    max_body_bytes=64 * 1024, max_document_bytes=LIMIT)


@pytest.fixture
def api(settings):
    with running_api(settings, run_worker=False) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


@pytest.fixture
def stored(api):
    """A document stored before the bad input arrives: it must come out of it intact."""
    text = "Stored before. It must survive every bad request."
    doc = api.post("/v1/documents", content=text.encode(), headers=TEXT, params={"name": "kept.txt"}).json()
    return doc["id"], text


def rows(settings, model) -> int:
    with Database(settings.database_url).session() as s:
        return s.query(model).count()


def assert_intact(api, settings, stored, documents: int = 1, jobs: int = 0):
    doc_id, text = stored
    assert api.get(f"/v1/documents/{doc_id}/text").text == text
    assert rows(settings, Document) == documents and rows(settings, Job) == jobs


def message(response) -> str:
    detail = response.json()["detail"]
    return detail["message"] if isinstance(detail, dict) else detail


# ----- uploads ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body, content_type, status, words", [
    (b"", "text/plain", 400, "empty"),
    (b" \n\t\r\n ", "text/plain", 400, "empty"),
    (b"caf\xe9 au lait", "text/plain", 400, "not valid UTF-8 (bad byte at offset 3)"),
    (b"cut short \xe2\x82", "text/plain", 400, "not valid UTF-8"),
    ("UTF-16 text".encode("utf-16"), "text/plain", 400, "not valid UTF-8"),
    (b"an encoded surrogate \xed\xa0\x80", "text/plain", 400, "not valid UTF-8"),  # CESU-8, not UTF-8
    (b"binary\x00file\x00", "text/plain", 400, "NUL byte"),
    (b'{"text": "json"}', "application/json", 415, "text/plain"),
    (b"\x89PNG\r\n\x1a\n", "image/png", 415, "text/plain"),
    (b"--x\r\nContent-Disposition: form-data; name=f\r\n\r\nhi\r\n--x--\r\n", "multipart/form-data; boundary=x", 415,
     "text/plain"),
])
def test_bad_uploads_get_a_4xx_with_a_message_and_store_nothing(api, settings, stored, body, content_type, status, words):
    response = api.post("/v1/documents", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert words in message(response)
    assert_intact(api, settings, stored)


def test_an_upload_over_the_limit_is_413_whether_or_not_its_length_is_declared(api, settings, stored):
    declared = api.post("/v1/documents", content=b"x" * (LIMIT + 1), headers=TEXT)
    assert declared.status_code == 413 and f"limit is {LIMIT} bytes" in message(declared)

    # Chunked (no Content-Length): refused once the limit passes. (uvicorn drains what the client
    # goes on sending, discarding it; the app's own reading is measured below.)
    def chunks():
        for _ in range(64):
            yield b"y" * 65536

    try:
        streamed = api.post("/v1/documents", content=chunks(), headers=TEXT)
        assert streamed.status_code == 413 and "over the limit" in message(streamed)
    except httpx.TransportError:
        pass  # the server answered 413 and closed while the client was still sending
    assert_intact(api, settings, stored)
    exactly = api.post("/v1/documents", content=b"z" * LIMIT, headers=TEXT)  # the limit itself is fine
    assert exactly.status_code == 201, exactly.text


async def test_the_app_stops_reading_an_upload_at_the_limit(settings):
    """In process, so what the app pulls is counted: one chunk past the limit, not the whole body."""
    app = create_app(settings, run_worker=False)
    pulled, chunk, total = 0, 65536, 64 * 1024 * 1024
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        pulled += chunk
        return {"type": "http.request", "body": b"y" * chunk, "more_body": pulled < total}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/documents", "raw_path": b"/v1/documents", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"text/plain"), (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
    await app(scope, receive, send)
    assert sent[0]["status"] == 413 and b"over the limit" in sent[1]["body"]
    assert pulled <= LIMIT + chunk, f"the app read {pulled} bytes of a body over a {LIMIT}-byte limit"
    assert rows(settings, Document) == 0


def test_a_json_body_over_its_limit_is_413(api, settings, stored):
    huge = {"kind": "chat", "params": {"messages": [{"role": "user", "content": "x" * 100_000}]}}
    response = api.post("/v1/jobs", json=huge)
    assert response.status_code == 413 and "limit" in message(response)
    assert_intact(api, settings, stored)


@pytest.mark.parametrize("url", ["/v1/purge?older_than_days=7.1144639488771384e16", "/v1/purge?older_than_days=1e6",
                                 "/v1/jobs?offset=5520688057515306019239673056137838592", "/v1/documents?limit=99999999999999999999"])
def test_numbers_too_large_for_the_database_or_a_date_are_422(api, url):
    response = api.post(url) if "purge" in url else api.get(url)  # purge: an OverflowError, a 500, found by schemathesis
    assert response.status_code == 422, response.text
    assert "less than or equal" in message(response)


# ----- unicode ---------------------------------------------------------------------------------

def raw_json(api, path: str, body: str):
    """Post JSON text as it is: a client library would refuse to encode a lone surrogate."""
    return api.post(path, content=body.encode("utf-8"), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("path, body, where", [
    ("/v1/jobs", '{"kind": "chat", "params": {"messages": [{"role": "user", "content": "a\\ud800b"}]}}',
     "params.messages.0.content: contains a lone surrogate (U+D800)"),
    ("/v1/jobs", '{"kind": "chat", "params": {"messages": [{"role": "user", "content": "hi"}], "stop": ["\\udfff"]}}',
     "params.stop.0: contains a lone surrogate (U+DFFF)"),
    ("/v1/jobs", '{"kind": "chat", "params": {"messages": [{"role": "user", "content": "nul \\u0000 here"}]}}',
     "params.messages.0.content: contains a NUL character"),
    ("/v1/jobs", '{"kind": "summarize", "params": {"document_id": "\\u0000"}}', "params.document_id: contains a NUL"),
    ("/v1/jobs", '{"kind": "chat", "params": {"\\ud800": 1, "messages": [{"role": "user", "content": "hi"}]}}',
     "params.\\ud800: the key contains"),
    ("/v1/jobs", '{"kind": "chat", "params": {}, "prompt_set": "\\ud800"}', "prompt_set"),
    ("/v1/datasets", '{"recipe": "longwriter", "items": [{"instruction": "Write \\ud83d."}]}',
     "body.items.0.instruction: contains a lone surrogate (U+D83D)"),
    ("/v1/datasets", '{"recipe": "ruler-mlt", "document_id": "\\u0000"}', "body.document_id: contains a NUL"),
])
def test_json_with_lone_surrogates_or_nul_is_422_and_stores_nothing(api, settings, stored, path, body, where):
    response = raw_json(api, path, body)  # was: a 500 after the job was stored (surrogates), or on PostgreSQL (NUL)
    assert response.status_code == 422, response.text
    assert where in message(response)
    assert_intact(api, settings, stored)


def test_a_jsonl_line_with_a_lone_surrogate_is_rejected_by_number(api, settings, stored):
    jsonl = '{"instruction": "Write a poem."}\n{"instruction": "Write \\udc00 twice."}\n'
    response = api.post("/v1/datasets", json={"recipe": "longwriter", "jsonl": jsonl})
    assert response.status_code == 202, response.text
    assert response.json()["rejected_lines"] == [
        {"line": 2, "error": "line.instruction: contains a lone surrogate (U+DC00) at position 6; send valid UTF-8 text"}]
    assert api.get(f"/v1/jobs/{response.json()['id']}").status_code == 200  # what was stored can be read back
    only_bad = api.post("/v1/datasets", json={"recipe": "longwriter", "jsonl": '{"instruction": "\\u0000"}'})
    assert only_bad.status_code == 422 and "NUL" in only_bad.json()["detail"]["rejected_lines"][0]["error"]


@pytest.mark.parametrize("url", [
    "/v1/jobs/%00", "/v1/jobs/abc%00/steps", "/v1/jobs?kind=%00", "/v1/jobs?parent_id=x%00y", "/v1/jobs?status=%00",
    "/v1/documents/%00", "/v1/documents/%00/text", "/v1/datasets/%00/export", "/v1/prompts?prompt_set=%00",
])
def test_nul_in_a_url_is_400(api, url):
    response = api.get(url)  # PostgreSQL refuses NUL in any text parameter: a 500 before
    assert response.status_code == 400 and "NUL" in message(response)


def test_a_nul_in_a_document_name_is_refused(api, settings, stored):
    response = api.post("/v1/documents", content=b"Some text.", headers=TEXT, params={"name": "a\x00b"})
    assert response.status_code == 400 and "NUL" in message(response)
    assert_intact(api, settings, stored)


TRICKY = [
    "\u202egnp.exe",                                 # RIGHT-TO-LEFT OVERRIDE: shows as "exe.png"
    "\u200fשלום עולם\u200f and مرحبا",               # RLM, Hebrew, Arabic
    "e\u0301\u0301\u0301 Zalgo z\u0336\u0327\u0344",   # stacked combining marks
    "\u0915\u094d\u0937 \u4e2d\u6587 \U0001F468\u200D\U0001F469\u200D\U0001F467",  # conjunct, CJK, ZWJ emoji
    "zero\u200bwidth \ufeffBOM inside \u2028 line separator",
]


def test_rtl_marks_and_combining_characters_round_trip(api):
    for tricky in TRICKY:
        text = f"{tricky}\n\nA second paragraph with the same: {tricky}."
        doc = api.post("/v1/documents", content=text.encode(), headers=TEXT, params={"name": tricky})
        assert doc.status_code == 201, doc.text
        assert doc.json()["name"] == tricky
        assert api.get(f"/v1/documents/{doc.json()['id']}").json()["name"] == tricky
        assert api.get(f"/v1/documents/{doc.json()['id']}/text").content == text.encode()
        job = api.post("/v1/jobs", json={"kind": "write", "params": {"instruction": f"Write about {tricky}."}})
        assert job.status_code == 202, job.text
        assert api.get(f"/v1/jobs/{job.json()['id']}").json()["params"]["instruction"] == f"Write about {tricky}."


# ----- names that look like paths ----------------------------------------------------------------

def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_a_document_name_is_only_a_name(api, data_dir, tmp_path):
    before = tree(tmp_path)
    for name in ("../../etc/passwd", "..\\..\\windows\\win.ini", "/etc/shadow", "%2e%2e%2fx",
                 "datasets/../../escape.jsonl", "~/.ssh/authorized_keys", "con", "a/" * 100):
        doc = api.post("/v1/documents", content=f"Text named {name!r}.".encode(), headers=TEXT, params={"name": name})
        assert doc.status_code == 201, doc.text
        assert api.get(f"/v1/documents/{doc.json()['id']}").json()["name"] == name
    written = tree(tmp_path) - before  # the database (and its journal) only, inside the data directory
    assert all(p.startswith("data" + os.sep + "longform.db") for p in written), written


def test_prompt_sets_ids_and_export_formats_cannot_name_other_paths(api, settings, data_dir, tmp_path, stored):
    before = tree(tmp_path)
    for prompt_set in ("../../etc", "..", ".hidden", "a/b", "/etc"):
        job = api.post("/v1/jobs", json={**CHAT, "prompt_set": prompt_set})
        assert job.status_code == 422 and "invalid prompt set name" in message(job), job.text
        listing = api.get("/v1/prompts", params={"prompt_set": prompt_set})
        assert listing.status_code == 422 and "invalid prompt set name" in message(listing), listing.text
    build = api.post("/v1/datasets", json={"recipe": "longwriter", "items": [{"instruction": "Write."}],
                                            "formats": ["../../x"]})
    assert build.status_code == 422 and "formats" in message(build)
    for url in ("/v1/datasets/..%2F..%2Fetc/export", "/v1/datasets/%2e%2e/stats", "/v1/jobs/..%2Fx/steps"):
        assert api.get(url).status_code == 404, url
    for url in ("/v1/datasets/..%2F..%2Fetc", "/v1/jobs/..%2F..%2Fdata", "/v1/documents/..%2Flongform.db"):
        assert api.delete(url).status_code == 404, url
    dataset = api.post("/v1/datasets", json={"recipe": "longwriter", "items": [{"instruction": "Write."}]}).json()
    export = api.get(f"/v1/datasets/{dataset['id']}/export", params={"format": "../../../etc/passwd"})
    assert export.status_code == 422 and "format" in message(export)
    assert all(p.startswith("data" + os.sep + "longform.db") for p in tree(tmp_path) - before)
    assert_intact(api, settings, stored, jobs=1)


# ----- a 20 MB document on one line --------------------------------------------------------------

def one_line(size: int) -> str:
    sentence = "The quick brown fox jumps over the lazy dog, and it keeps on running. "
    return (sentence * (size // len(sentence) + 1))[:size].rstrip() + "."


@pytest.mark.slow
def test_a_20mb_single_line_document_is_stored_and_chunked_in_bounded_time(tmp_path, fake_llm):
    """20 MB is under the default limit (MAX_DOCUMENT_BYTES, 20 MiB): accepted, and chunkable.
    One byte over the limit is a 413. (SQLite only: PostgreSQL stores it the same way.)"""
    settings = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path), llm_endpoints=fake_llm.base_url)
    limit = Settings.model_fields["max_document_bytes"].default
    assert limit == 20 * 1024 * 1024
    text = one_line(20_000_000)
    with running_api(settings, run_worker=False) as url, httpx.Client(base_url=url, timeout=300) as api:
        over = api.post("/v1/documents", content=b"x" * (limit + 1), headers=TEXT)
        assert over.status_code == 413 and "limit" in message(over)
        doc = api.post("/v1/documents", content=text.encode(), headers=TEXT)
        assert doc.status_code == 201, doc.text
        assert doc.json()["bytes"] == len(text) and doc.json()["words"] > 3_000_000
        stored = api.get(f"/v1/documents/{doc.json()['id']}/text").text
    assert stored == text
    started = time.monotonic()
    chunks = counted_chunks(stored, 2048)  # pysbd alone took 40 s on 200 KB of one line
    elapsed = time.monotonic() - started
    assert elapsed < 240, f"chunking took {elapsed:.0f} s"
    assert all(c.tokens <= 2048 for c in chunks) and len(chunks) > 1500
    assert " ".join(c.text for c in chunks).split() == text.split()  # no word lost


@pytest.mark.slow
def test_a_long_line_without_spaces_is_cut_in_bounded_time():
    text = "x" * 1_000_000  # no space, no sentence end: cut by characters, one window at a time
    started = time.monotonic()
    chunks = counted_chunks(text, 2048)
    assert time.monotonic() - started < 120
    assert "".join(c.text for c in chunks) == text and all(c.tokens <= 2048 for c in chunks)


def test_a_paragraph_over_the_pysbd_limit_is_cut_at_sentence_ends():
    text = " ".join(f"Sentence number {i} ends here." for i in range(3000))  # ~90 KB, one paragraph
    chunks = counted_chunks(text, 256)
    assert all(c.tokens <= 256 for c in chunks)
    assert all(c.text.endswith("ends here.") for c in chunks)  # cut at sentence ends, not inside one
    assert " ".join(c.text for c in chunks) == text
