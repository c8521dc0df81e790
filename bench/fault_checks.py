"""What a fault must not do to jobs, measured on the database (bench/faults.py and
tests/test_faults.py use the same checks).

- lost: a submitted job (or a child it spawned) that is missing, or not in a final state
  (succeeded / failed / cancelled) once the scenario's deadline has passed.
- rerun_steps: a step that had succeeded before the fault and was executed again after it.
  A replayed step is never written again, so its row keeps its attempt number and its
  finished_at; a step that runs again gets a new attempt and a new finished_at.
- stored_failures: failure text stored as output: the fake server's error bodies, HTTP error
  texts, tracebacks, broken JSON kept as if parsed, empty text, a written piece that ends in
  the middle of a sentence; and a failed job without a reason.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import select

from db.models import Job, Step
from db.session import Database

FINAL_STATUSES = ("succeeded", "failed", "cancelled")

# Texts a failure leaves behind: the fake server's error bodies (fakellm/app.py), the names
# of the error types it and the OpenAI client use, uvicorn/Starlette error pages, Python
# tracebacks, vLLM's context errors, and the chatter around a "prose" malformed-JSON answer.
FAILURE_MARKERS = (
    "(injected fault)",
    "Internal server error",
    "Internal Server Error",
    "Too many requests",
    "InternalServerError",
    "RateLimitError",
    "BadRequestError",
    "APIConnectionError",
    "APITimeoutError",
    "Traceback (most recent call last)",
    "maximum context length is",
    '{"error":',
    "'error':",
    "Sure! Here is the JSON you asked for",
    "```json",
    "LLMServerError",
    "LLMTimeout",
    "LLMConnectionError",
    "LLMUnavailable",
    "Connection refused",
)

# A written piece ends at a sentence end (a closing quote or bracket may follow).
_SENTENCE_END = re.compile(r"[.!?。！？…][\"'”’)）」』*]*\s*$")
# Strings that look like a JSON document: an object, or an array of objects or strings.
_JSON_LIKE = re.compile(r"^\s*(\{|\[\s*[\{\"'])")


@dataclass(frozen=True)
class StepMark:
    """What identifies one execution of a step."""

    attempt: int
    finished_at: datetime | None
    calls: int


@dataclass
class JobOutcome:
    id: str
    kind: str
    status: str
    error: str | None
    parent_id: str | None


@dataclass
class Audit:
    jobs: int = 0  # submitted (top-level) jobs
    children: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # status -> count, top-level and children
    lost: list[str] = field(default_factory=list)
    rerun_steps: list[str] = field(default_factory=list)  # "job_id:key"
    stored_failures: list[str] = field(default_factory=list)  # "job_id where: what"
    failure_reasons: Counter = field(default_factory=Counter)  # short reason -> count

    @property
    def ok(self) -> bool:
        return not (self.lost or self.rerun_steps or self.stored_failures)

    def summary(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs, "children": self.children, "outcomes": dict(self.outcomes),
            "lost": len(self.lost), "rerun_steps": len(self.rerun_steps),
            "stored_failures": len(self.stored_failures),
            "failure_reasons": dict(self.failure_reasons),
        }


# -- reading the database --------------------------------------------------------------------


def family(db: Database, job_ids: Iterable[str]) -> list[JobOutcome]:
    """The jobs and every descendant they spawned (dataset items), as stored now."""
    found: dict[str, JobOutcome] = {}
    frontier = list(job_ids)
    with db.session() as s:
        while frontier:
            rows = s.execute(select(Job.id, Job.kind, Job.status, Job.error, Job.parent_id)
                             .where(Job.id.in_(frontier))).all()
            rows += s.execute(select(Job.id, Job.kind, Job.status, Job.error, Job.parent_id)
                              .where(Job.parent_id.in_(frontier))).all()
            frontier = []
            for row in rows:
                if row.id not in found:
                    found[row.id] = JobOutcome(row.id, row.kind, row.status, row.error, row.parent_id)
                    frontier.append(row.id)
    return list(found.values())


def step_marks(db: Database, job_ids: Iterable[str]) -> dict[tuple[str, str], StepMark]:
    """Every succeeded step of these jobs and their descendants, by (job id, key)."""
    ids = [j.id for j in family(db, job_ids)]
    marks: dict[tuple[str, str], StepMark] = {}
    with db.session() as s:
        for start in range(0, len(ids), 500):
            rows = s.execute(select(Step.job_id, Step.key, Step.attempt, Step.finished_at, Step.calls)
                             .where(Step.job_id.in_(ids[start:start + 500]), Step.status == "succeeded"))
            for job_id, key, attempt, finished_at, calls in rows:
                marks[(job_id, key)] = StepMark(attempt, _naive(finished_at), calls)
    return marks


def _naive(value: datetime | None) -> datetime | None:
    # SQLite gives naive datetimes, PostgreSQL aware ones: compare them the same way.
    return value.replace(tzinfo=None) if value is not None and value.tzinfo else value


def all_final(db: Database, job_ids: Iterable[str]) -> bool:
    return all(j.status in FINAL_STATUSES for j in family(db, job_ids))


# -- the three counts ------------------------------------------------------------------------


def rerun_steps(before: dict[tuple[str, str], StepMark], after: dict[tuple[str, str], StepMark]) -> list[str]:
    """Steps that had succeeded before and were executed again (or lost their success)."""
    return [f"{job_id}:{key}" for (job_id, key), mark in before.items() if after.get((job_id, key)) != mark]


def lost_jobs(db: Database, submitted: list[str]) -> list[str]:
    stored = {j.id: j for j in family(db, submitted)}
    lost = [job_id for job_id in submitted if job_id not in stored]
    lost += [j.id for j in stored.values() if j.status not in FINAL_STATUSES]
    return lost


def failure_texts(value: Any, where: str = "") -> list[str]:
    """Failure markers, and JSON-looking strings that do not parse, anywhere in a stored value."""
    found: list[str] = []
    if isinstance(value, str):
        for marker in FAILURE_MARKERS:
            if marker in value:
                found.append(f"{where}: contains {marker!r}")
        if _JSON_LIKE.match(value):
            try:
                json.loads(value)
            except ValueError:
                found.append(f"{where}: broken JSON {value[:60]!r}")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += failure_texts(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += failure_texts(item, f"{where}[{i}]")
    return found


def _unfinished_text(text: Any) -> str | None:
    if not isinstance(text, str) or not text.strip():
        return "empty text"
    if not _SENTENCE_END.search(text):
        return f"ends mid-sentence: {text.strip()[-40:]!r}"
    return None


def result_problems(kind: str, result: Any) -> list[str]:
    """What a succeeded job's result must hold, by kind: text that is there and finished, a
    plan that is a list of sections (not a string kept from a broken JSON answer)."""
    if not isinstance(result, dict):
        return [f"result is {type(result).__name__}, not an object"]
    problems: list[str] = []
    if kind == "write":
        if (why := _unfinished_text(result.get("text"))) is not None:
            problems.append(f"result.text {why}")
        for i, section in enumerate(result.get("sections") or []):
            if isinstance(section, dict) and not section.get("words"):
                problems.append(f"result.sections[{i}] has no words")
        plan = result.get("plan")
        if plan is not None and not (isinstance(plan, list) and all(isinstance(p, dict) for p in plan)):
            problems.append(f"result.plan is not a list of sections: {str(plan)[:60]!r}")
    elif kind == "summarize":
        if (why := _unfinished_text(result.get("summary"))) is not None:
            problems.append(f"result.summary {why}")
    elif kind == "chat":
        if not str(result.get("text") or "").strip():
            problems.append("result.text empty")
    elif kind == "solve":
        if not str(result.get("text") or "").strip() and not result.get("turns"):
            problems.append("result has no text and no turns")
    return problems


def stored_failures(db: Database, submitted: list[str]) -> list[str]:
    jobs = {j.id: j for j in family(db, submitted)}
    found: list[str] = []
    with db.session() as s:
        for job in jobs.values():
            if job.status == "failed" and not (job.error or "").strip():
                found.append(f"{job.id}: failed without a reason")
        ids = list(jobs)
        for start in range(0, len(ids), 200):
            chunk = ids[start:start + 200]
            for job_id, kind, result in s.execute(select(Job.id, Job.kind, Job.result)
                                                  .where(Job.id.in_(chunk), Job.status == "succeeded")):
                found += [f"{job_id} {p}" for p in result_problems(kind, result)]
                found += [f"{job_id} {p}" for p in failure_texts(result, "result")]
            for job_id, key, output in s.execute(select(Step.job_id, Step.key, Step.output)
                                                 .where(Step.job_id.in_(chunk), Step.status == "succeeded")):
                found += [f"{job_id} {p}" for p in failure_texts(output, f"step {key}")]
    return found


def short_reason(error: str | None) -> str:
    """A failed job's reason, shortened for the table: the exception type and its first words."""
    text = (error or "no reason").strip().splitlines()[0]
    head, _, rest = text.partition(":")
    words = rest.split()[:6]
    return (head + (": " + " ".join(words) if words else ""))[:70]


def audit(db: Database, submitted: list[str], before: dict[tuple[str, str], StepMark] | None = None) -> Audit:
    """The counts for one scenario, once its deadline has passed. `before`: the succeeded
    steps at the moment of the fault (empty: nothing had succeeded yet, nothing to re-run)."""
    jobs = family(db, submitted)
    report = Audit(jobs=len(submitted), children=len(jobs) - len(set(submitted) & {j.id for j in jobs}))
    report.outcomes = dict(Counter(j.status for j in jobs))
    report.lost = lost_jobs(db, submitted)
    report.rerun_steps = rerun_steps(before or {}, step_marks(db, submitted)) if before else []
    report.stored_failures = stored_failures(db, submitted)
    report.failure_reasons = Counter(short_reason(j.error) for j in jobs if j.status == "failed")
    return report
