"""Answer formats and code blocks in model replies.

The reference asks for the final answer wrapped as `<<<answer>>>` and takes the last match;
`boxed` is LaTeX's `\\boxed{...}` (balanced braces), for models trained on it. A reply's code
is its first fenced block (```python, ```py or a bare ```), as the reference runs it.
"""
from __future__ import annotations

import re
from typing import Literal

AnswerFormat = Literal["angle", "boxed"]
ANSWER_FORMATS: tuple[str, ...] = ("angle", "boxed")

_ANGLE = re.compile(r"<<<(.*?)>>>", re.S)
_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)


def format_hint(answer_format: AnswerFormat) -> str:
    """How the model is told to mark its final answer (used by the prompt templates)."""
    if answer_format == "boxed":
        return "\\boxed{...}"
    return "<<<...>>>"


def _boxed(text: str) -> list[str]:
    found = []
    start = 0
    while True:
        at = text.find("\\boxed{", start)
        if at < 0:
            return found
        depth, i = 1, at + len("\\boxed{")
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth:
            return found
        found.append(text[at + len("\\boxed{"):i - 1])
        start = i


def extract_answer(text: str | None, answer_format: AnswerFormat = "angle") -> str | None:
    """The last wrapped answer in `text`, stripped; None when there is none (or it is empty).
    Format markers the model did not fill ("<<<...>>>", "<<<answer>>>") are not answers."""
    if not text:
        return None
    found = _boxed(text) if answer_format == "boxed" else _ANGLE.findall(text)
    for value in reversed(found):
        value = value.strip()
        if value and value not in ("...", "answer"):
            return value
    return None


def without_code(text: str) -> str:
    """`text` with its fenced blocks removed (a program's `<<<{result}>>>` is not an answer)."""
    return re.sub(r"```.*?(```|$)", "", text, flags=re.S)


def extract_code(text: str | None) -> str | None:
    """The first fenced Python block (a bare ``` block counts), or None."""
    if not text:
        return None
    for match in _FENCE.finditer(text):
        code = match.group(2).strip("\n")
        if code.strip():
            return code + "\n"
    return None
