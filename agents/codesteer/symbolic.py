"""The symbolic checker: how much computation a piece of code really does.

CodeSteer's checker (spec B.2, "Symbolic Checker") counts regex matches of `for|while`,
`if|elif|else` and `try|except` in the source, plus 0.25 per binary operation, and calls a
score of 2 or less "not complex enough to carry out symbolic computing": the model's code
only prints an answer it reasoned out in text. Its raw substring counts are wrong ("format"
counts as a `for`, "elif" counts twice, words in strings and comments count), so here the
same idea is computed on Python's syntax tree (`ast`):

- loops: every `for`/`while` statement and every comprehension clause (`for` in [...]);
- branches: every `if`/`elif` (an `elif` is one node), conditional expression and `match` case;
  an `else` adds nothing (it is part of its `if`);
- exception handling: every `try` statement and each of its `except` handlers;
- binary operations: arithmetic operators (`BinOp`) and augmented assignments (`+=`), 0.25 each;
- score = loops + branches + exception handling + 0.25 x binary operations.

Flags (reported with the score, not part of it):
- searching: a loop, or an import of itertools;
- symbolic: a call of eval/exec, or an import of sympy, z3, constraint (python-constraint) or
  fractions (exact arithmetic). The reference also counts f-strings and `.format` here; they
  format output and compute nothing, so they do not count;
- numerical: any binary operation;
- recursion: a function that calls itself (a search the reference's counts miss).
Code that does not parse scores 0 with `parses: false`.
"""
from __future__ import annotations

import ast
from typing import Any

TOO_SIMPLE_AT = 2.0  # the reference: a score of 2 or less is "not complex enough"
SYMBOLIC_MODULES = {"sympy", "z3", "constraint", "fractions"}
SEARCH_MODULES = {"itertools"}


def _module_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name.split(".")[0] for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [node.module.split(".")[0]]
    return []


def _called_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    return None


def _recursive_functions(tree: ast.AST) -> list[str]:
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if any(isinstance(n, ast.Call) and _called_name(n) == fn.name for n in ast.walk(fn)):
                found.append(fn.name)
    return found


def analyze(code: str) -> dict[str, Any]:
    """{"parses", "score", "loops", "branches", "exception_handling", "binary_ops", "flags":
    {"searching", "symbolic", "numerical", "recursion"}, "too_simple", "summary"}."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as exc:
        return {"parses": False, "score": 0.0, "loops": 0, "branches": 0, "exception_handling": 0, "binary_ops": 0,
                "flags": {"searching": False, "symbolic": False, "numerical": False, "recursion": False},
                "too_simple": True, "summary": f"The code does not parse ({type(exc).__name__}: {exc}); "
                "it cannot compute anything as written."}
    loops = branches = handling = binops = 0
    modules: set[str] = set()
    evals = False
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While, ast.comprehension)):
            loops += 1
        elif isinstance(node, (ast.If, ast.IfExp, ast.match_case)):
            branches += 1
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            handling += 1 + len(node.handlers)
        elif isinstance(node, (ast.BinOp, ast.AugAssign)):
            binops += 1
        elif isinstance(node, ast.Call) and _called_name(node) in ("eval", "exec"):
            evals = True
        modules.update(_module_names(node))
    recursion = _recursive_functions(tree)
    flags = {
        "searching": loops > 0 or bool(modules & SEARCH_MODULES),
        "symbolic": evals or bool(modules & SYMBOLIC_MODULES),
        "numerical": binops > 0,
        "recursion": bool(recursion),
    }
    score = loops + branches + handling + 0.25 * binops
    too_simple = score <= TOO_SIMPLE_AT
    parts = [f"{loops} loop(s)", f"{branches} branch(es)", f"{handling} exception-handling part(s)",
             f"{binops} binary operation(s)"]
    summary = f"Complexity score {score:g} ({', '.join(parts)})."
    used = [name for name, on in flags.items() if on]
    summary += f" It uses: {', '.join(used)}." if used else " It uses no searching, symbolic or numerical computation."
    if recursion:
        summary += f" Recursive function(s): {', '.join(sorted(set(recursion)))}."
    if too_simple:
        summary += (" The code may not be complex enough to carry out symbolic computing: it seems to print an "
                    "answer worked out beforehand rather than compute it.")
    return {"parses": True, "score": score, "loops": loops, "branches": branches, "exception_handling": handling,
            "binary_ops": binops, "flags": flags, "too_simple": too_simple, "summary": summary}
