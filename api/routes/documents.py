"""Documents: plain UTF-8 text uploads, stored once per owner by content hash."""
from __future__ import annotations

import asyncio

import hashlib

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from agents.text import count_tokens, count_words, unstorable_text
from api.auth import Principal, principal
from api.serialize import document_json
from api.state import AppState, get_state
from db import deletion, repo
from db.models import Document

router = APIRouter(prefix="/v1", tags=["documents"])


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body is {int(declared)} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_utf8(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"document is not valid UTF-8 (bad byte at offset {exc.start}); convert it to UTF-8 first") from None
    # NUL is valid UTF-8 but no text has it (a binary file), and PostgreSQL text cannot hold it.
    nul = text.find("\x00")
    if nul >= 0:
        raise HTTPException(400, f"document contains a NUL byte (at character {nul}): send plain text, not a binary file")
    return text.removeprefix("\ufeff")


# The body is read raw (streamed against the limit), so the docs (and fuzzers) learn of it here.
_TEXT_BODY = {"requestBody": {"required": True, "content": {
    "text/plain": {"schema": {"type": "string", "description": "the document, UTF-8"}}}}}


@router.post("/documents", status_code=201, openapi_extra=_TEXT_BODY)
async def upload(
    request: Request,
    name: str | None = Query(default=None, max_length=300),
    strip_gutenberg: bool = Query(default=False, description="remove a Project Gutenberg header and footer"),
    state: AppState = Depends(get_state),
    who: Principal = Depends(principal),
):
    content_type = request.headers.get("content-type", "text/plain").split(";")[0].strip()
    if content_type not in ("text/plain", "application/octet-stream"):
        raise HTTPException(415, "send the document as a text/plain body")
    raw = await read_limited_body(request, state.settings.max_document_bytes)
    # In a thread: decoding, cleaning and counting a 20 MB text takes seconds, and the event
    # loop serves every other request meanwhile.
    body, created = await asyncio.to_thread(store_document, state, who, raw, name, strip_gutenberg)
    return JSONResponse(body, status_code=201 if created else 200)


def store_document(state: AppState, who: Principal, raw: bytes, name: str | None,
                   strip_gutenberg: bool) -> tuple[dict, bool]:
    """Check and store an upload (once per owner and content). Returns its JSON and whether it
    is new. Shared by this route and the admin UI's upload form."""
    if name is not None and (problem := unstorable_text(name, "name")):
        raise HTTPException(400, problem)
    text = decode_utf8(raw)
    if strip_gutenberg:
        from agents.gutenberg import strip_gutenberg as strip

        text = strip(text)
    if not text.strip():
        raise HTTPException(400, "document is empty")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    with state.db.session() as session:
        existing = repo.find_document(session, who.owner, digest, strip_gutenberg)
        if existing is not None:
            return document_json(existing), False
    words, tokens = count_words(text), count_tokens(text)
    with state.db.session() as session:
        doc = Document(
            owner=who.owner, sha256=digest, name=name, text=text, bytes=len(text.encode("utf-8")),
            words=words, tokens=tokens, gutenberg_stripped=strip_gutenberg,
        )
        session.add(doc)
        session.flush()
        return document_json(doc), True


def load_visible_document(session, document_id: str, who: Principal) -> Document:
    doc = session.get(Document, document_id)
    if doc is None or not who.can_see(doc.owner):
        raise HTTPException(404, f"document {document_id} not found")
    return doc


@router.get("/documents")
def list_documents(
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=2**31 - 1),  # past any real listing; larger overflows the database
    state: AppState = Depends(get_state),
    who: Principal = Depends(principal),
):
    with state.db.reading() as session:
        docs = repo.list_documents(session, None if who.is_admin else who.owner, limit, offset)
        return {"items": [document_json(d) for d in docs], "limit": limit, "offset": offset}


@router.get("/documents/{document_id}")
def get_document(document_id: str, state: AppState = Depends(get_state), who: Principal = Depends(principal)):
    with state.db.reading() as session:
        return document_json(load_visible_document(session, document_id, who))


@router.get("/documents/{document_id}/text", response_class=PlainTextResponse)
def get_document_text(document_id: str, state: AppState = Depends(get_state), who: Principal = Depends(principal)):
    with state.db.reading() as session:
        return PlainTextResponse(load_visible_document(session, document_id, who).text, media_type="text/plain; charset=utf-8")


@router.delete("/documents/{document_id}", status_code=204,
               responses={409: {"description": "a queued or running job uses the document"}})
def delete_document(document_id: str, state: AppState = Depends(get_state), who: Principal = Depends(principal)):
    """Delete a document (204); refused (409) while a queued or running job names it. Finished
    jobs that used it keep their results."""
    with state.db.session() as session:
        doc = load_visible_document(session, document_id, who)
        try:
            deletion.delete_document(session, doc)
        except deletion.StillActive as exc:
            raise HTTPException(409, str(exc)) from None
    return Response(status_code=204)
