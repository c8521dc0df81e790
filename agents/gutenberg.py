"""Remove the Project Gutenberg header and footer (licence, credits) around a book's text.

Gutenberg files wrap the book in marker lines such as
  *** START OF THIS PROJECT GUTENBERG EBOOK PRIDE AND PREJUDICE ***
  *** END OF THE PROJECT GUTENBERG EBOOK PRIDE AND PREJUDICE ***
(older files: "*END*THE SMALL PRINT!" for the end of the header, "End of [the] Project
Gutenberg's ..." before the footer). Everything outside the markers is boilerplate, and a
"Produced by ..." credit paragraph right after the start marker is dropped too.
A text without markers comes back unchanged: stripping never guesses.
"""
from __future__ import annotations

import re

_START = re.compile(
    r"^[ \t]*\*{3}[ \t]*START OF (?:THE |THIS )?PROJECT GUTENBERG E-?BOOK[^\n]*$"
    r"|^[ \t]*\*END\*THE SMALL PRINT![^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
_END = re.compile(
    r"^[ \t]*\*{3}[ \t]*END OF (?:THE |THIS )?PROJECT GUTENBERG E-?BOOK[^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
# "End of the Project Gutenberg EBook of X" / "End of Project Gutenberg's X": the footer's first line.
_END_LINE = re.compile(
    r"^[ \t]*End of (?:the )?Project Gutenberg(?:'s)?[^\n]*$", re.IGNORECASE | re.MULTILINE
)
# Credits paragraph at the top of the body: "Produced by Anonymous Volunteers", "Produced by X, Y
# and the Online Distributed Proofreading Team at http://www.pgdp.net".
_PRODUCED_BY = re.compile(r"\A\s*(?:Produced|Prepared|Transcribed) by\b[^\n]*(?:\n[^\n]+)*", re.IGNORECASE)


def strip_gutenberg(text: str) -> str:
    """The book text between the Gutenberg markers, or `text` unchanged if it has none."""
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    start = _START.search(normalized)
    if start is None:
        return text
    body_start = start.end()
    end = _END.search(normalized, body_start)
    body_end = end.start() if end else len(normalized)
    # The footer often begins a few lines before the end marker.
    footer = None
    for footer in _END_LINE.finditer(normalized, body_start, body_end):
        pass  # keep the last one: the book itself may mention Project Gutenberg earlier
    if footer is not None and body_end - footer.start() < 2000:
        body_end = footer.start()
    body = normalized[body_start:body_end]
    body = _PRODUCED_BY.sub("", body, count=1)
    return body.strip("\n").strip() + "\n"
