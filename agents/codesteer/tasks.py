"""SymBench-like task suites, generated in code (nothing downloaded), each with an exact checker.

Every task has difficulty levels 1..5 (`LEVELS`); `generate(task, level, index, seed)` is
deterministic (a `random.Random` seeded by the four of them). A question states the answer
format the solve job asks for (`<<<answer>>>`); checkers take the extracted answer text.

Tasks (spec B.1/B.2 names in brackets):
- game24 [Game 24]: use each number once with + - * / and parentheses to make 24. Level: how
  many numbers (4 up to level 3, then 5) and how large (up to 9, 13, 13, 13, 20). Only sets
  with a solution are drawn. The checker parses the expression (AST, numbers and + - * /
  only), checks the multiset of numbers and evaluates it exactly (fractions).
- multiply [Number Multiply]: the product of two integers of 2, 4, 8, 12 or 20 digits.
- letters [Letters]: how often a letter occurs in a string of 30, 100, 250, 500 or 800 letters.
- sort [sorting]: a list of 6, 12, 25, 50 or 100 integers in ascending order.
- path [Path Plan]: the length of a shortest 4-neighbour path from S to G in a grid of 4x4 up
  to 12x12 with walls (#); only grids with a path are drawn; checked against BFS.
- transform [String Deletion & Modification]: apply 2..6 operations (reverse, rotate, delete
  every k-th character, swap case, replace a letter) in order to a string; the exact result.

A user's own tasks: `load_task_file(path)` reads JSONL lines {"question", "answer", "checker"
(one of CHECKERS), "task"?, "level"?}; `check(item, answer)` dispatches on the checker type.
"""
from __future__ import annotations

import ast
import itertools
import json
import random
import re
import string
from collections import deque
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

TASKS: tuple[str, ...] = ("game24", "multiply", "letters", "sort", "path", "transform")
LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
# Checker types (a user's file names one per line).
CHECKERS: tuple[str, ...] = ("exact", "exact_ci", "integer", "number", "int_list", "game24")
WRAP = "Give your final answer wrapped as <<<answer>>>."


@dataclass(frozen=True)
class TaskItem:
    index: int  # position in the set
    task: str
    level: int
    question: str
    answer: str  # the gold answer (game24: one solution; the checker accepts any)
    checker: str  # one of CHECKERS
    data: dict[str, Any] = field(default_factory=dict)  # what the checker needs beyond `answer`

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- checkers ------------------------------------------------------------------------------------


def _clean(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"`":
        text = text[1:-1].strip()
    return text


def _integer(text: str) -> int | None:
    text = _clean(text).replace(",", "").replace("_", "").replace(" ", "")
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else None


def _int_list(text: str) -> list[int] | None:
    text = _clean(text)
    if re.search(r"[^\d\s,\[\]()+-]", text):
        return None
    return [int(n) for n in re.findall(r"[+-]?\d+", text)]


def evaluate_expression(expression: str) -> tuple[Fraction, list[int]] | None:
    """(exact value, the integers used) of an arithmetic expression of integers and + - * /
    and parentheses; None for anything else (or a division by zero). An "= 24" tail is cut."""
    expression = _clean(expression).split("=")[0].replace("×", "*").replace("÷", "/").replace("x", "*")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return None
    used: list[int] = []

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            return a / b  # ZeroDivisionError: not a valid answer
        raise ValueError("not allowed")

    try:
        return ev(tree), used
    except (ValueError, ZeroDivisionError, RecursionError):
        return None


def check_game24(answer: str, numbers: list[int], target: int = 24) -> bool:
    result = evaluate_expression(answer)
    return result is not None and result[0] == target and sorted(result[1]) == sorted(numbers)


def check(item: TaskItem, answer: str | None) -> bool:
    """Is `answer` (the extracted answer text) right for `item`?"""
    if answer is None:
        return False
    kind = item.checker
    if kind == "exact":
        return _clean(answer) == item.answer.strip()
    if kind == "exact_ci":
        return _clean(answer).casefold() == item.answer.strip().casefold()
    if kind == "integer":
        return _integer(answer) is not None and _integer(answer) == _integer(item.answer)
    if kind == "number":
        try:
            return abs(float(_clean(answer).replace(",", "")) - float(item.answer)) <= 1e-6 * max(1.0, abs(float(item.answer)))
        except ValueError:
            return False
    if kind == "int_list":
        return _int_list(answer) is not None and _int_list(answer) == _int_list(item.answer)
    if kind == "game24":
        numbers = item.data.get("numbers") or _int_list(item.answer.split("=")[0]) or []
        return check_game24(answer, list(numbers), int(item.data.get("target", 24)))
    raise ValueError(f"unknown checker {kind!r}; the checkers are {', '.join(CHECKERS)}")


# -- generators ----------------------------------------------------------------------------------


def _solve24(numbers: list[int], target: int = 24) -> str | None:
    """One expression over all `numbers` that makes `target`, or None (exhaustive search)."""
    def search(items: list[tuple[Fraction, str]]) -> str | None:
        if len(items) == 1:
            return items[0][1] if items[0][0] == target else None
        for i, j in itertools.permutations(range(len(items)), 2):
            (a, ea), (b, eb) = items[i], items[j]
            rest = [items[k] for k in range(len(items)) if k not in (i, j)]
            options = [(a + b, f"({ea} + {eb})"), (a - b, f"({ea} - {eb})"), (a * b, f"({ea} * {eb})")]
            if b != 0:
                options.append((a / b, f"({ea} / {eb})"))
            for value, expr in options:
                found = search(rest + [(value, expr)])
                if found:
                    return found
        return None

    found = search([(Fraction(n), str(n)) for n in numbers])
    return found[1:-1] if found and found.startswith("(") and found.endswith(")") else found


def _game24(rng: random.Random, level: int) -> tuple[str, str, str, dict[str, Any]]:
    count = 4 if level <= 3 else 5
    high = {1: 9, 2: 13, 3: 13, 4: 13, 5: 20}[level]
    while True:
        numbers = sorted(rng.randint(1, high) for _ in range(count))
        if level == 3 and len(set(numbers)) < 4:  # level 3: four distinct numbers up to 13
            continue
        solution = _solve24(numbers)
        if solution:
            break
    question = (f"Use each of the numbers {', '.join(map(str, numbers))} exactly once, with +, -, *, / and "
                f"parentheses, to make 24. Answer with the expression only (for example <<<(1 + 2 + 3) * 4>>>). {WRAP}")
    return question, solution, "game24", {"numbers": numbers, "target": 24}


def _multiply(rng: random.Random, level: int) -> tuple[str, str, str, dict[str, Any]]:
    digits = {1: 2, 2: 4, 3: 8, 4: 12, 5: 20}[level]
    a = rng.randint(10 ** (digits - 1), 10 ** digits - 1) * rng.choice((1, -1))
    b = rng.randint(10 ** (digits - 1), 10 ** digits - 1)
    return f"What is {a} * {b}? Answer with the integer only. {WRAP}", str(a * b), "integer", {}


def _letters(rng: random.Random, level: int) -> tuple[str, str, str, dict[str, Any]]:
    length = {1: 30, 2: 100, 3: 250, 4: 500, 5: 800}[level]
    alphabet = "abcdefghij" if level <= 2 else string.ascii_lowercase
    text = "".join(rng.choice(alphabet) for _ in range(length))
    letter = rng.choice(text)
    question = (f"How many times does the letter '{letter}' occur in the following string of {length} letters?\n"
                f"{text}\nAnswer with the count only. {WRAP}")
    return question, str(text.count(letter)), "integer", {"letter": letter}


def _sort(rng: random.Random, level: int) -> tuple[str, str, str, dict[str, Any]]:
    size = {1: 6, 2: 12, 3: 25, 4: 50, 5: 100}[level]
    numbers = [rng.randint(-999, 999) for _ in range(size)]
    question = (f"Sort these {size} integers in ascending order: {', '.join(map(str, numbers))}. "
                f"Answer with the sorted list, comma-separated in square brackets (e.g. <<<[1, 2, 3]>>>). {WRAP}")
    return question, str(sorted(numbers)), "int_list", {}


def _shortest_path(grid: list[str]) -> int | None:
    rows, cols = len(grid), len(grid[0])
    start = next((r, c) for r in range(rows) for c in range(cols) if grid[r][c] == "S")
    seen = {start: 0}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        if grid[r][c] == "G":
            return seen[(r, c)]
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < rows and 0 <= nc < cols and grid[nr][nc] != "#" and (nr, nc) not in seen:
                seen[(nr, nc)] = seen[(r, c)] + 1
                queue.append((nr, nc))
    return None


def _path(rng: random.Random, level: int) -> tuple[str, str, str, dict[str, Any]]:
    size = {1: 4, 2: 6, 3: 8, 4: 10, 5: 12}[level]
    walls = {1: 0.15, 2: 0.2, 3: 0.25, 4: 0.28, 5: 0.3}[level]
    while True:
        cells = [["#" if rng.random() < walls else "." for _ in range(size)] for _ in range(size)]
        (sr, sc), (gr, gc) = rng.sample([(r, c) for r in range(size) for c in range(size)], 2)
        cells[sr][sc], cells[gr][gc] = "S", "G"
        grid = ["".join(row) for row in cells]
        length = _shortest_path(grid)
        if length is not None and length >= max(2, size // 2):
            break
    question = ("In this grid, S is the start, G the goal, # a wall and . a free cell. You move one cell up, down, "
                "left or right per step and cannot enter walls or leave the grid.\n" + "\n".join(grid)
                + f"\nHow many steps does a shortest path from S to G take? Answer with the number only. {WRAP}")
    return question, str(length), "integer", {"grid": grid}


_OPS: dict[str, tuple[str, Callable[[str, int], str]]] = {
    "reverse": ("reverse the string", lambda s, _: s[::-1]),
    "rotate": ("move the first {k} characters to the end", lambda s, k: s[k:] + s[:k]),
    "delete": ("delete every {k}-th character (the {k}-th, the {k2}-th, ...)",
               lambda s, k: "".join(ch for i, ch in enumerate(s, 1) if i % k)),
    "swapcase": ("swap the case of every letter", lambda s, _: s.swapcase()),
    "replace": ("replace every '{a}' with '{b}'", None),  # needs two letters: see below
}


def _transform(rng: random.Random, level: int) -> tuple[str, str, str, dict[str, Any]]:
    length = {1: 8, 2: 12, 3: 20, 4: 30, 5: 40}[level]
    steps = {1: 2, 2: 3, 3: 4, 4: 5, 5: 6}[level]
    text = "".join(rng.choice(string.ascii_letters[:10] + string.ascii_letters[26:36]) for _ in range(length))
    current, described = text, []
    for _ in range(steps):
        op = rng.choice(list(_OPS))
        k = rng.randint(2, 4)
        if op == "replace":
            a = rng.choice(current) if current else "a"
            b = rng.choice(string.ascii_lowercase)
            described.append(f"replace every '{a}' with '{b}'")
            current = current.replace(a, b)
            continue
        template, fn = _OPS[op]
        described.append(template.format(k=k, k2=2 * k))
        current = fn(current, k)
    ops = "\n".join(f"{i}. {d}" for i, d in enumerate(described, 1))
    question = (f"Start from the string \"{text}\" and apply these operations in order (letters are case-"
                f"sensitive; positions count from 1 on the current string):\n{ops}\nWhat is the final string? "
                f"Answer with the string only, no quotes. {WRAP}")
    return question, current, "exact", {"steps": described}


GENERATORS: dict[str, Callable[[random.Random, int], tuple[str, str, str, dict[str, Any]]]] = {
    "game24": _game24, "multiply": _multiply, "letters": _letters, "sort": _sort, "path": _path,
    "transform": _transform,
}


def generate(task: str, level: int, index: int, seed: int = 0) -> TaskItem:
    if task not in GENERATORS:
        raise ValueError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(map(str, LEVELS))}, got {level}")
    rng = random.Random(f"{seed}/{task}/{level}/{index}")
    question, answer, checker, data = GENERATORS[task](rng, level)
    return TaskItem(index, task, level, question, answer, checker, data)


def build_set(tasks: list[str], levels: list[int], per_level: int, seed: int = 0,
              limit: int | None = None) -> list[TaskItem]:
    """`per_level` items of each task at each level, interleaved (one of each task first, then
    the next level ...), so a `limit` keeps every task in the set; indices follow that order."""
    unknown = [t for t in tasks if t not in GENERATORS]
    if unknown:
        raise ValueError(f"unknown task {unknown[0]!r}; the tasks are {', '.join(TASKS)}")
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad:
        raise ValueError(f"level must be one of {', '.join(map(str, LEVELS))}, got {bad[0]}")
    if per_level < 1:
        raise ValueError("per_level must be at least 1")
    order = [(t, lv, k) for k in range(per_level) for lv in levels for t in tasks]
    order = order[:limit] if limit else order
    items = [generate(t, lv, k, seed) for t, lv, k in order]
    return [TaskItem(i, it.task, it.level, it.question, it.answer, it.checker, it.data) for i, it in enumerate(items)]


class TaskFileError(ValueError):
    """A user's task file is malformed; the message lists every bad line."""


def load_task_file(path: str | Path) -> list[TaskItem]:
    """A user's tasks: JSONL {"question", "answer", "checker", "task"? (default "custom"),
    "level"? (default 1), "numbers"? (game24)} per line."""
    from agents.evaluation import read_jsonl_items

    def parse(row: dict[str, Any], _number: int, index: int) -> TaskItem:
        question, answer, checker = row.get("question"), row.get("answer"), row.get("checker", "exact")
        if not isinstance(question, str) or not question.strip():
            raise ValueError('"question" must be a non-empty string')
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        if isinstance(answer, list):
            answer = json.dumps(answer)
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError('"answer" must be a non-empty string, number or list')
        if checker not in CHECKERS:
            raise ValueError(f'"checker" must be one of {", ".join(CHECKERS)}, got {checker!r}')
        level = row.get("level", 1)
        if isinstance(level, bool) or not isinstance(level, int):
            raise ValueError('"level" must be an integer')
        data = {"numbers": row["numbers"]} if "numbers" in row else {}
        return TaskItem(index, str(row.get("task") or "custom"), level, question.strip(), answer.strip(), checker, data)

    return read_jsonl_items(path, TaskFileError, "tasks", parse)
