"""The admin UI's database queries (db/repo.py) on SQLite and on PostgreSQL: search in params
and document names, counts per status, per-minute figures (strftime vs date_trunc)."""
from __future__ import annotations

from datetime import timedelta

from db import repo
from db.models import Document, Step, utcnow
from db.session import Database
from tests.db_fixtures import *  # noqa: F401,F403


def test_search_counts_and_per_minute_figures(database_url):
    db = Database(database_url)
    now = utcnow()
    with db.session() as s:
        s.add(Document(id="doc-1", name="Pride_and_100%_Prejudice.txt", owner="alice", sha256="0" * 64, text="x",
                       bytes=1, words=1, tokens=1))
        s.flush()
        write, _ = repo.create_job(s, "write", {"instruction": "An essay on tea_time"}, owner="alice")
        solve, _ = repo.create_job(s, "solve", {"question": "What is 6 x 7?"}, owner="bob")
        summary, _ = repo.create_job(s, "summarize", {"document_id": "doc-1"}, owner="alice")
        for job, status in ((write, "succeeded"), (solve, "failed")):
            job.status, job.finished_at = status, now
        s.add(Step(job_id=write.id, key="plan", status="succeeded", completion_tokens=40, finished_at=now))
        s.add(Step(job_id=write.id, key="section/1", status="succeeded", completion_tokens=60, finished_at=now))
    with db.session() as s:
        found = lambda **kw: sorted(j.kind for j in repo.search_jobs(s, **kw)[0])  # noqa: E731
        assert found(text="TEA_TIME") == ["write"]  # case-insensitive, "_" literal
        assert found(text="ea_t") == ["write"] and found(text="a_t") == ["write"] and found(text="tea time") == []
        assert found(text="6 x 7") == ["solve"]
        assert found(text="100%_prej") == ["summarize"]  # a document's name, "%" literal
        assert found(owner="alice") == ["summarize", "write"]
        assert found(kinds=["solve"], statuses=["failed"]) == ["solve"]
        assert repo.search_jobs(s, limit=1)[1] == 3
        assert repo.job_counts(s) == {"succeeded": 1, "failed": 1, "queued": 1}
        assert repo.job_counts(s, owner="bob") == {"failed": 1}
        since = now - timedelta(minutes=5)
        per_minute = repo.finished_per_minute(s, since)
        assert sorted((status, n) for _, status, n in per_minute) == [("failed", 1), ("succeeded", 1)]
        minute = per_minute[0][0]
        assert minute.tzinfo is not None and abs(minute - now) < timedelta(minutes=1)
        assert [n for _, n in repo.tokens_per_minute(s, since)] == [100]
        assert repo.tokens_per_minute(s, since, owner="bob") == []
