"""Batch commands: `longform eval longbench-write|longen|tlg|symbench` and `longform dataset build|export`.

Both run real jobs through the REST API (so they use the server's workers, model pool and
checkpoints); `eval --local` instead runs the agents in this process on the configured model.
Both check first that the API answers, and an eval stops as soon as it no longer does.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import click

from api.cli.base import CliFailure, cli, load_settings, make_client, note, parse_params
from api.cli.jobs import follow_job, report_outcome
from api.client import ApiError, ApiUnreachable


class ApiGone(BaseException):
    """Carries ApiUnreachable out of `run_prompt_set`, which records an item's Exception as a
    failed item and goes on: a BaseException ends the whole run instead."""

    def __init__(self, error: ApiUnreachable):
        super().__init__(str(error))
        self.error = error


@cli.group("eval")
def eval_group() -> None:
    """Evaluate methods on a benchmark."""


@eval_group.command("longbench-write")
@click.option("--file", "prompt_file", type=click.Path(exists=True, dir_okay=False),
              help="A LongBench-Write-format JSONL ({prompt, type, length} per line); default: the bundled 120 prompts.")
@click.option("--method", "methods", multiple=True, type=click.Choice(["agentwrite", "single"]),
              help="Method to run; repeatable (default: both, side by side).")
@click.option("--protocol", "protocols", default="controlled", show_default=True, metavar="LIST",
              help="Comma-separated protocols to run side by side: controlled, paper (the method as published).")
@click.option("--given-length", is_flag=True,
              help="Pass each prompt's annotated length as target_words (default: the prompt text only, as the benchmark gives it).")
@click.option("--bin", "bins", multiple=True, metavar="BIN",
              help='Only prompts whose annotated length falls in this bin ("[0,500)", "[500,2k)", "[2k,4k)", "[4k,20k]"); repeatable.')
@click.option("--per-bin", type=click.IntRange(min=1), help="Only the first N prompts of each length bin.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N prompts (after --bin and --per-bin).")
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True, help="Jobs in flight at once.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="eval-longbench-write", show_default=True,
              help="Directory for report.json, table.txt and plot.png.")
@click.option("--local", is_flag=True, help="Run the agents in this process on the configured model instead of as API jobs.")
@click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE", help="A write param for every item (e.g. temperature=0.5); repeatable.")
@click.pass_context
def longbench_write(ctx, prompt_file, methods, protocols, given_length, bins, per_bin, limit, concurrency, out_dir,
                    local, pairs) -> None:
    """Run LongBench-Write as write jobs and report S_l (and S_q when a judge is configured)
    overall, by length bin and by type, for each method and protocol. The last line is one
    JSON object: {"agentwrite": {"protocol": "controlled", "S_l": .., "paper": {"S_l": ..}}, ...}
    (the controlled figures at the method's level, every other protocol's under its name)."""
    from agents import evaluation

    try:
        items = evaluation.load_prompt_set(prompt_file or evaluation.BUNDLED_PROMPT_SET)
    except evaluation.PromptSetError as exc:
        raise CliFailure(str(exc), 2) from None
    try:
        items = evaluation.select_items(items, bins=bins, per_bin=per_bin)
    except ValueError as exc:
        raise CliFailure(str(exc), 2) from None
    items = items[:limit] if limit else items
    methods = list(methods) or list(evaluation.DEFAULT_METHODS)
    protocols = parse_protocols(protocols)
    write_params = parse_params(None, None, pairs)
    if local:
        run_item = _local_runner(write_params, given_length)
    else:
        run_item = _api_runner(ctx, lambda item, method, protocol: (
            "write", evaluation.job_params(item, method, protocol, given_length, write_params)))
    total = len(items) * len(methods) * len(protocols)

    def progress(outcome: dict[str, Any]) -> str:
        arm = evaluation.arm_label(outcome["method"], outcome["protocol"])
        return (f"{arm:21s} #{outcome['index']:<3d} "
                f"S_l={outcome.get('S_l') if outcome.get('S_l') is None else round(outcome['S_l'], 1)} "
                f"words={outcome.get('word_count')}/{outcome.get('length')} {outcome.get('status', '')}")

    started = time.monotonic()
    report = run_eval(lambda on_outcome: evaluation.run_prompt_set(
        items, run_item, methods, protocols=protocols, given_length=given_length,
        concurrency=concurrency, on_outcome=on_outcome,
    ), total, progress)
    write_eval_outputs(out_dir, report, evaluation.render_table(report), evaluation.write_plot,
                       evaluation.summary_line(report), f"{total} runs in {time.monotonic() - started:.0f} s")


def run_eval(start: Callable[[Callable[[dict[str, Any]], None]], Awaitable[dict[str, Any]]], total: int,
             progress: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Run an evaluation (`start(on_outcome)`, a coroutine giving the report) with a progress
    line "[k/total] ..." per finished run on stderr; when the API stops answering, say how
    far it got and end with ApiUnreachable (exit 2) instead of failing every remaining run."""
    done = {"n": 0}

    def on_outcome(outcome: dict[str, Any]) -> None:
        done["n"] += 1
        note(f"[{done['n']}/{total}] {progress(outcome)}")

    try:
        return asyncio.run(start(on_outcome))
    except ApiGone as gone:
        note(f"stopped after {done['n']} of {total} runs: the API no longer answers (submitted jobs go on there)")
        raise gone.error from None


def write_eval_outputs(out_dir: str, report: dict[str, Any], table: str, write_plot: Callable[[dict[str, Any], Path], Path],
                       summary_line: str, timing: str) -> None:
    """report.json, table.txt and plot.png in `out_dir`; the table on stdout, then the summary
    line as the last line."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.txt").write_text(table + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    plot = write_plot(report, out / "plot.png")
    click.echo(table)
    note(f"{timing}; report {out / 'report.json'}, plot {plot}")
    click.echo(summary_line)


def parse_protocols(text: str) -> list[str]:
    from agents.evaluation import PROTOCOLS

    protocols = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise CliFailure(f"--protocol takes a comma-separated list of {', '.join(PROTOCOLS)}; got {text!r}", 2)
    return protocols


def _api_runner(ctx: click.Context, job_for: Callable[[Any, str, str], tuple[str, dict[str, Any]]]):
    """A `run_item` that submits each run as a job (`job_for(item, method, protocol)` gives its
    kind and params) and waits for it; a job that does not succeed fails its item."""
    client = make_client(ctx)
    gone: list[ApiUnreachable] = []  # once the API is gone, no item starts (one may be waiting to)

    async def run_item(item, method: str, protocol: str) -> dict[str, Any]:
        if gone:
            raise ApiGone(gone[0])
        kind, params = job_for(item, method, protocol)
        try:
            job, _ = await asyncio.to_thread(client.submit_job, kind, params)
            final = await asyncio.to_thread(client.wait_job, job["id"])
        except ApiUnreachable as exc:
            gone.append(exc)
            raise ApiGone(exc) from None
        if final["status"] != "succeeded":
            raise RuntimeError(f"job {job['id']} {final['status']}: {final.get('error')}")
        return final["result"]

    return run_item


def _local_runner(write_params: dict[str, Any], given_length: bool):
    from agents import evaluation
    from agents.llm.factory import make_judge_client, make_llm_client

    settings = load_settings()
    return evaluation.local_runner(make_llm_client(settings), judge=make_judge_client(settings),
                                   settings=settings, write_params=write_params, given_length=given_length)


@eval_group.command("longen")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--method", "methods", multiple=True, type=click.Choice(["single", "agentwrite", "lengthen"]),
              help="Method to run; repeatable (default: all three; lengthen only where its job kind is installed).")
@click.option("--protocol", "protocols", default="controlled", show_default=True, metavar="LIST",
              help="Comma-separated protocols to run side by side: controlled, paper (the method as published).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N queries.")
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True, help="Jobs in flight at once.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="eval-longen", show_default=True,
              help="Directory for report.json, table.txt and plot.png.")
@click.option("--local", is_flag=True, help="Run the agents in this process on the configured model instead of as API jobs.")
@click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A param for every job (e.g. temperature=0.5); repeatable.")
@click.pass_context
def longen(ctx, file, methods, protocols, limit, concurrency, out_dir, local, pairs) -> None:
    """Score LonGen length following on FILE, a JSONL in LonGen's format ({query, type (about,
    range, above, below), constraint, language, range} per line; a 24-query sample ships as
    agents/evaldata/longen_sample.jsonl). Each job gets only the query. Scores (0..1, words
    by Self-Lengthen's counter) overall, by type, by range and by language for each method
    and protocol; the last line is one JSON object: {"single": {"protocol": "controlled",
    "length_following": .., "paper": {..}}, ...}."""
    from agents import longen as lg

    try:
        items = lg.load_longen(file)
    except lg.LonGenFileError as exc:
        raise CliFailure(str(exc), 2) from None
    items = items[:limit] if limit else items
    protocols = parse_protocols(protocols)
    params = parse_params(None, None, pairs)
    if local:
        text_fields, where = _local_kind_texts({lg.METHOD_KINDS[m] for m in lg.METHODS}), "this installation"
    else:
        client = make_client(ctx)
        text_fields = {k["kind"]: (k.get("view") or {}).get("text") or "text" for k in client.list_kinds()}
        where = f"the API at {client.base_url}"
    methods = _available_methods(list(methods), lg.METHODS, lg.METHOD_KINDS, text_fields, where)
    if local:
        from agents.llm.factory import make_judge_client, make_llm_client

        settings = load_settings()
        run_item = lg.local_runner(make_llm_client(settings), judge=make_judge_client(settings), settings=settings,
                                   params=params)
    else:
        run_item = _api_runner(ctx, lambda item, method, protocol: lg.job_for(item, method, protocol, params))
    total = len(items) * len(methods) * len(protocols)

    def progress(outcome: dict[str, Any]) -> str:
        arm = lg.arm_label(outcome["method"], outcome["protocol"])
        line = (f"{arm:21s} #{outcome['index']:<3d} {outcome['type']:5s} {outcome['language']} {outcome['range']} "
                f"score={outcome['score']:.2f} words={outcome['word_count']} in [{outcome['low']:.0f}, {outcome['high']:.0f}]")
        return line + (f" failed: {outcome['error'][:160]}" if outcome["error"] else "")

    started = time.monotonic()
    report = run_eval(lambda on_outcome: lg.run_longen(
        items, run_item, methods, protocols=protocols, text_fields=text_fields,
        concurrency=concurrency, on_outcome=on_outcome,
    ), total, progress)
    write_eval_outputs(out_dir, report, lg.render_table(report), lg.write_plot, lg.summary_line(report),
                       f"{total} runs in {time.monotonic() - started:.0f} s")


@eval_group.command("tlg")
@click.option("--instructions", "instruction_file", type=click.Path(exists=True, dir_okay=False),
              help='A JSONL of instructions ({"instruction"} or {"Instruction"} or {"prompt"} per line, e.g. OpenHermes '
                   "converted); default: the bundled set written for Longform (agents/evaldata/tlg_instructions.jsonl).")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["prompt", "mlt", "controlled"]),
              help="Length mode to run; repeatable (default: prompt and controlled, side by side).")
@click.option("--seed", type=int, default=10, show_default=True, help="Seed of the shuffle and of the drawn targets (Ruler's is 10).")
@click.option("--per-target", type=click.IntRange(min=1), help="A balanced set: N items per target (9N in all) instead of uniform draws.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N items of the set (Ruler's set is the first 2,000).")
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True, help="Jobs in flight at once.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="eval-tlg", show_default=True,
              help="Directory for report.json, table.txt, plot.png and tlg.jsonl (the set, Ruler's records).")
@click.option("--local", is_flag=True, help="Run the chat jobs in this process on the configured model instead of as API jobs.")
@click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A chat param for every job (e.g. model=..., max_tokens=4096); repeatable.")
@click.pass_context
def tlg(ctx, instruction_file, modes, seed, per_target, limit, concurrency, out_dir, local, pairs) -> None:
    """Ruler's Target Length Generation: each instruction gets one of nine targets (10, 30,
    50, 80, 150, 300, 500, 700, >800 words), drawn uniformly with --seed (or --per-target N
    each), and runs as a chat job per mode: prompt (Ruler's baseline sentence, temperature
    0, max_tokens 2048), mlt (Meta Length Tokens, for Ruler-trained models) or controlled
    (the length controller). Words are counted as \\w+ runs. Reports PM and FM per level and
    All Level (an answer failing the quality filters is a miss), the filter pass rate,
    exact-length rate and RMSE; the last line is one JSON object:
    {"prompt": {"PM": .., "FM": .., "filter_pass": ..}, "controlled": {..}}."""
    from agents import tlg as tl

    try:
        instructions = tl.load_instructions(instruction_file or tl.BUNDLED_INSTRUCTIONS)
        items = tl.build_set(instructions, seed=seed, per_target=per_target, limit=limit)
    except tl.InstructionFileError as exc:
        raise CliFailure(str(exc), 2) from None
    except ValueError as exc:  # --per-target larger than the file allows
        raise CliFailure(f"--per-target: {exc}", 2) from None
    modes = list(dict.fromkeys(modes)) or list(tl.DEFAULT_MODES)
    params = parse_params(None, None, pairs)
    if local:
        from agents.llm.factory import make_llm_client

        _check_chat_length_modes(_local_chat_params(), "this installation")
        settings = load_settings()
        run_item = tl.local_runner(make_llm_client(settings), settings=settings, params=params)
    else:
        client = make_client(ctx)
        chat = next((k for k in client.list_kinds() if k["kind"] == "chat"), None)
        _check_chat_length_modes(set(((chat or {}).get("params_schema") or {}).get("properties") or {}) if chat else None,
                                 f"the API at {client.base_url}")
        run_item = _api_runner(ctx, lambda item, mode, protocol: tl.job_for(item, mode, protocol, params))
    total = len(items) * len(modes)
    set_info = {"instructions": str(instruction_file) if instruction_file else "bundled", "seed": seed,
                "per_target": per_target, "limit": limit, "size": len(items), "targets": tl.target_counts(items)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tlg.jsonl").write_text("".join(json.dumps(i.record(), ensure_ascii=False) + "\n" for i in items),
                                   encoding="utf-8")
    note(f"TLG set: {len(items)} items ({', '.join(f'{t}: {n}' for t, n in set_info['targets'].items())}), "
         f"modes {', '.join(modes)}")

    def progress(outcome: dict[str, Any]) -> str:
        line = (f"{outcome['mode']:10s} #{outcome['index']:<4d} target={outcome['target']:>4s} "
                f"words={outcome['word_count']} PM={int(outcome['pm'])} FM={int(outcome['fm'])}"
                + ("" if outcome["passes_filters"] else " (fails the filters)"))
        return line + (f" failed: {outcome['error'][:160]}" if outcome["error"] else "")

    started = time.monotonic()
    report = run_eval(lambda on_outcome: tl.run_tlg(items, run_item, modes, concurrency=concurrency,
                                                    on_outcome=on_outcome), total, progress)
    report["set"] = set_info
    write_eval_outputs(out_dir, report, tl.render_table(report), tl.write_plot, tl.summary_line(report),
                       f"{total} runs in {time.monotonic() - started:.0f} s")


def _csv(text: str, option: str, known: tuple[str, ...] | None = None) -> list[str]:
    values = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if not values:
        raise CliFailure(f"{option} needs at least one value", 2)
    if known is not None:
        unknown = [v for v in values if v not in known]
        if unknown:
            raise CliFailure(f"{option}: unknown {unknown[0]!r}; choose from {', '.join(known)}", 2)
    return values


@eval_group.command("symbench")
@click.option("--methods", default="text,code,code_text_sum,steer", show_default=True, metavar="LIST",
              help="Comma-separated solve methods to run side by side: text, code, code_text_sum, steer.")
@click.option("--tasks", "task_names", default="game24,multiply,letters,sort,path,transform", show_default=True,
              metavar="LIST", help="Comma-separated generated tasks.")
@click.option("--levels", default="1,2,3", show_default=True, metavar="LIST", help="Comma-separated difficulty levels (1-5).")
@click.option("--per-level", type=click.IntRange(min=1), default=2, show_default=True,
              help="Items of each task at each level.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated tasks.")
@click.option("--file", "task_file", type=click.Path(exists=True, dir_okay=False),
              help='Your own tasks instead: JSONL {"question", "answer", "checker" (exact, exact_ci, integer, number, '
                   'int_list, game24), "task"?, "level"?, "numbers"? (game24)} per line.')
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N items (the set interleaves tasks).")
@click.option("--protocol", "protocols", default="controlled", show_default=True, metavar="LIST",
              help="Comma-separated protocols: controlled, paper (the reference's loop and defaults).")
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True, help="Jobs in flight at once.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="eval-symbench", show_default=True,
              help="Directory for report.json, table.txt, plot.png and tasks.jsonl (the set).")
@click.option("--export-sharegpt", "export", type=click.Path(dir_okay=False),
              help="Also write the steer runs' steering trajectories as multi-turn ShareGPT JSONL to this file.")
@click.option("--correct-only", is_flag=True, help="With --export-sharegpt: only trajectories whose answer is right.")
@click.option("--local", is_flag=True, help="Run the solve jobs in this process on the configured model instead of as API jobs.")
@click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A solve param for every job (e.g. task_model=..., max_turns=3); repeatable.")
@click.pass_context
def symbench(ctx, methods, task_names, levels, per_level, seed, task_file, limit, protocols, concurrency, out_dir,
             export, correct_only, local, pairs) -> None:
    """CodeSteer's comparison on generated SymBench-like tasks (Game 24, big-number multiplication,
    letter counting, sorting, grid path planning, string transformation; levels 1-5) or your
    own JSONL: each item runs as a solve job per method. Reports success (an answer of the last
    turn, code output or text, passes the task's exact checker), tokens, model calls, code runs
    and wall time per query, and the average normalized score (per task success / best method's
    x 100; a task no method solves is left out and counted). The last line is one JSON object:
    {"text": {"success": .., "normalized": ..}, ...}."""
    from agents.codesteer import symbench as sb
    from agents.codesteer import tasks as tk
    from agents.solve import METHODS

    methods = _csv(methods, "--methods", METHODS)
    protocols = parse_protocols(protocols)
    try:
        if task_file:
            items = tk.load_task_file(task_file)[:limit] if limit else tk.load_task_file(task_file)
        else:
            try:
                level_values = [int(v) for v in _csv(levels, "--levels")]
            except ValueError:
                raise CliFailure(f"--levels takes integers 1-5, got {levels!r}", 2) from None
            items = tk.build_set(_csv(task_names, "--tasks", tk.TASKS), level_values, per_level, seed, limit)
    except tk.TaskFileError as exc:
        raise CliFailure(str(exc), 2) from None
    except ValueError as exc:
        raise CliFailure(str(exc), 2) from None
    params = parse_params(None, None, pairs)
    if local:
        from agents.llm.factory import make_llm_client

        settings = load_settings()
        run_item = sb.local_runner(make_llm_client(settings), settings=settings, params=params)
    else:
        client = make_client(ctx)
        if not any(k["kind"] == "solve" for k in client.list_kinds()):
            raise CliFailure(f"the API at {client.base_url} has no job kind 'solve'", 2)
        run_item = sb.timed(_api_runner(ctx, lambda item, method, protocol: sb.job_for(item, method, protocol, params)))
    set_info = {"file": str(task_file) if task_file else None, "tasks": sorted({i.task for i in items}),
                "levels": sorted({i.level for i in items}), "per_level": None if task_file else per_level,
                "seed": None if task_file else seed, "limit": limit, "size": len(items)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tasks.jsonl").write_text("".join(json.dumps(i.as_dict(), ensure_ascii=False) + "\n" for i in items),
                                     encoding="utf-8")
    total = len(items) * len(methods) * len(protocols)
    note(f"SymBench set: {len(items)} items ({', '.join(set_info['tasks'])}), methods {', '.join(methods)}")

    def progress(o: dict[str, Any]) -> str:
        line = (f"{o['method']:13s} #{o['index']:<3d} {o['task']:9s} L{o['level']} "
                f"{'ok ' if o['success'] else 'no '} answer={str(o['answer'])[:40]!r} calls={o['model_calls']} "
                f"runs={o['code_runs']}")
        return line + (f" failed: {o['error'][:160]}" if o["error"] else "")

    started = time.monotonic()
    report = run_eval(lambda on_outcome: sb.run_symbench(items, run_item, methods, protocols=protocols,
                                                         concurrency=concurrency, on_outcome=on_outcome,
                                                         set_info=set_info), total, progress)
    if export:
        records = sb.sharegpt_records(report, correct_only=correct_only)
        Path(export).parent.mkdir(parents=True, exist_ok=True)
        Path(export).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        note(f"{len(records)} steering trajectories written to {export} (ShareGPT)")
    write_eval_outputs(out_dir, report, sb.render_table(report), sb.write_plot, sb.summary_line(report),
                       f"{total} runs in {time.monotonic() - started:.0f} s")


def _local_chat_params() -> set[str] | None:
    """The param names of this installation's `chat` kind (None when it does not load)."""
    from agents.kinds import UnknownKind, get_kind

    try:
        return set(get_kind("chat").params.model_fields)
    except UnknownKind:
        return None


def _check_chat_length_modes(params: set[str] | None, where: str) -> None:
    """TLG needs a `chat` kind that takes `target_words` and `length_mode` (exit 2 otherwise)."""
    if params is None:
        raise CliFailure(f"TLG runs chat jobs, and {where} has no job kind 'chat'", 2)
    missing = [p for p in ("target_words", "length_mode") if p not in params]
    if missing:
        raise CliFailure(f"TLG needs a chat kind with {' and '.join(missing)}; {where} has an older one", 2)


def _local_kind_texts(kinds: set[str]) -> dict[str, str]:
    """{kind: the result field of its main text} for each of `kinds` that loads here."""
    from agents.kinds import UnknownKind, get_kind

    out = {}
    for name in sorted(kinds):
        try:
            out[name] = get_kind(name).view.text or "text"
        except UnknownKind:
            pass
        except Exception as exc:  # noqa: BLE001 - a kind whose module does not import
            note(f"job kind {name!r} does not load here: {exc}")
    return out


def _available_methods(requested: list[str], known: tuple[str, ...], method_kinds: dict[str, str],
                       kinds: dict[str, Any], where: str) -> list[str]:
    """The methods to run: those asked for (exit 2 when one's job kind is missing), else every
    known method whose kind is there (a note names the ones left out)."""
    missing = [m for m in (requested or known) if method_kinds[m] not in kinds]
    if requested and missing:
        method = missing[0]
        raise CliFailure(f"--method {method} needs the job kind '{method_kinds[method]}', which {where} does not have "
                         f"(its kinds: {', '.join(sorted(kinds)) or 'none'})", 2)
    for method in missing:
        note(f"method {method} left out: {where} has no job kind '{method_kinds[method]}'")
    methods = [m for m in (requested or known) if m not in missing]
    if not methods:
        raise CliFailure(f"no method can run: {where} has none of the job kinds {', '.join(sorted(set(method_kinds.values())))}", 2)
    return list(dict.fromkeys(methods))


@cli.group("dataset")
def dataset_group() -> None:
    """Batch-build SFT datasets: LongWriter-6k style from write jobs, by Self-Lengthen (--recipe selflengthen),
    or Ruler's MLT data from (instruction, response) pairs (--recipe ruler-mlt)."""


DATASET_FORMATS = ["longwriter", "alpaca", "sharegpt", "long", "gen_sft", "ext_sft", "ruler", "chat-mlt"]
# The format `--out` writes when no --format is given: each recipe's first.
DEFAULT_EXPORT = {"longwriter": "longwriter", "selflengthen": "long", "ruler-mlt": "ruler"}


@dataset_group.command("build")
@click.argument("source", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--seed", "seeds", multiple=True,
              help="A seed prompt to generate instructions from; repeatable (with --count). With --recipe ruler-mlt: "
                   "the shuffle seed, one integer (default 0).")
@click.option("--count", type=click.IntRange(min=1), help="How many instructions to generate from the seeds.")
@click.option("--recipe", type=click.Choice(["longwriter", "selflengthen", "ruler-mlt"]), default="longwriter",
              show_default=True,
              help="longwriter: one write job per instruction (--method); selflengthen: Self-Lengthen's pipeline "
                   "(self-instruct from --seed, two Generator answers each, lengthen children, length-biased sampling); "
                   "ruler-mlt: SOURCE's (instruction, response) pairs labelled with Ruler's Meta Length Tokens by "
                   "their \\w+ count, capped per MLT (--mlt-cap) and shuffled (--seed N); no model calls.")
@click.option("--method", type=click.Choice(["agentwrite", "single"]), default="agentwrite", show_default=True,
              help="The write method of the longwriter recipe.")
@click.option("--format", "formats", multiple=True, type=click.Choice(DATASET_FORMATS),
              help="Export format; repeatable (default: longwriter; selflengthen: long, gen_sft, ext_sft and sharegpt; "
                   "ruler-mlt: ruler and chat-mlt).")
@click.option("--mlt-cap", type=click.IntRange(min=1),
              help="ruler-mlt: at most N pairs per MLT, the first in file order (default 20,000, the reference's).")
@click.option("--protocol", type=click.Choice(["paper", "controlled"]),
              help="selflengthen: the lengthen children's protocol (default paper: 3 micro-iterations, the 1.2x gate).")
@click.option("--length-demands", is_flag=True,
              help="selflengthen: rewrite the long/sharegpt queries to state their response's length (2,000-8,000 words).")
@click.option("--generator-model", metavar="NAME", help="selflengthen: the Generator's model (a second round: gen_sft).")
@click.option("--extender-model", metavar="NAME", help="selflengthen: the Extender's model (a second round: ext_sft).")
@click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A write param for every item (selflengthen: a lengthen param for every child); repeatable.")
@click.option("--gate", "gate_pairs", multiple=True, metavar="KEY=VALUE", help="A quality-gate setting (e.g. length_tolerance=0.3); repeatable.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Write the export here when the build ends.")
@click.option("--no-watch", is_flag=True, help="Print the dataset job id and return.")
@click.option("--lengths", "lengths_spec", metavar="SPEC",
              help="Length of an instruction that states none: longwriter6k (default: 90% uniform 2,000-10,000 words, "
                   "10% up to 32,000), uniform:MIN-MAX or fixed:N.")
@click.option("--length-seed", type=int, help="Seed of the drawn lengths (default 0; the same seed draws the same lengths).")
@click.option("--no-state-length", is_flag=True, help="Exports do not state the target length in the user turn.")
@click.option("--prompt-set", metavar="NAME", help="Render every item's write job from this prompt set: A prompt set installed on the server (see `longform prompts list`).")
@click.pass_context
def dataset_build(ctx, source, seeds, count, recipe, method, formats, mlt_cap, protocol, length_demands,
                  generator_model, extender_model, pairs, gate_pairs, out_file, no_watch, prompt_set, lengths_spec,
                  length_seed, no_state_length) -> None:
    """Build a dataset from SOURCE, a JSONL of instructions ({"instruction"|"prompt", optional
    "target_words"|"length"} per line), or from --seed prompts with --count. With --recipe
    ruler-mlt, SOURCE holds (instruction, response) pairs ({"instruction"|"Instruction"|"prompt"|
    "query", "response"|"output"|"answer"}, or a single-turn {"conversations": [human, gpt]})."""
    if recipe == "ruler-mlt":
        shuffle_seed = _ruler_mlt_options(ctx, source, seeds, count, length_seed)
        seeds = ()  # its --seed was the shuffle seed
    elif bool(source) == bool(seeds):
        raise CliFailure("give a JSONL file of instructions, or --seed prompts with --count", 2)
    if seeds and not count:
        raise CliFailure("--count is required with --seed", 2)
    body: dict[str, Any]
    if recipe == "ruler-mlt":
        body = {"recipe": recipe}
        if shuffle_seed is not None:
            body["seed"] = shuffle_seed
        if formats:
            body["formats"] = list(formats)
        if pairs:
            body["write"] = parse_params(None, None, pairs)  # refused by the server, naming the field
        if gate_pairs:
            body["gates"] = parse_params(None, None, gate_pairs)  # likewise
    elif recipe == "selflengthen":
        if ctx.get_parameter_source("method") is not click.core.ParameterSource.DEFAULT:
            raise CliFailure("--method applies to the longwriter recipe (selflengthen answers with its Generator "
                             "and extends with lengthen jobs)", 2)
        body = {"recipe": recipe, "lengthen": parse_params(None, None, pairs)}
        if gate_pairs:
            body["gates"] = parse_params(None, None, gate_pairs)  # refused by the server, naming the field
        if formats:
            body["formats"] = list(formats)
    else:
        body = {
            "write": {"method": method, **parse_params(None, None, pairs)},
            "gates": parse_params(None, None, gate_pairs),
            "formats": list(formats) or ["longwriter"],
        }
    for name, value in (("protocol", protocol), ("generator_model", generator_model),
                        ("extender_model", extender_model), ("length_demands", length_demands or None),
                        ("mlt_cap", mlt_cap)):
        if value is not None:
            body[name] = value  # the server refuses them for a recipe they do not apply to
    if source:
        raw = Path(source).read_bytes()
        try:
            body["jsonl"] = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CliFailure(f"{source} is not UTF-8 (bad byte at offset {exc.start})", 2) from None
    else:
        body["seeds"], body["count"] = list(seeds), count
    if prompt_set:
        body["prompt_set"] = prompt_set
    if lengths_spec:
        body["length_distribution"] = parse_length_spec(lengths_spec)
    if length_seed is not None:
        body["seed"] = length_seed
    if no_state_length:
        body["state_length"] = False
    client = make_client(ctx)
    try:
        job = client.create_dataset(body)
    except ApiError as exc:  # e.g. 422 when no line of the JSONL is a valid instruction
        _note_rejected(source, (exc.data or {}).get("rejected_lines"))
        raise
    _note_rejected(source, job.get("rejected_lines"))
    note(f"dataset job {job['id']}: {job['status']}")
    if no_watch:
        click.echo(job["id"])
        return
    final = follow_job(client, job["id"])
    report_outcome(final)
    result = final.get("result") or {}
    if result.get("stats"):
        shown = ("items", "kept", "gates", "formats") if recipe != "ruler-mlt" else ("items", "kept", "dropped", "per_mlt")
        note(json.dumps({k: result["stats"].get(k) for k in shown if k in result["stats"]}))
    if final["status"] != "succeeded" and not out_file:
        ctx.exit(1)
    if out_file:
        _export(client, final["id"], (list(formats) or [DEFAULT_EXPORT[recipe]])[0], out_file)
    click.echo(final["id"])


def _ruler_mlt_options(ctx: click.Context, source: str | None, seeds: tuple[str, ...], count: int | None,
                       length_seed: int | None) -> int | None:
    """Check the options of --recipe ruler-mlt; its --seed is the shuffle seed (an integer)."""
    if not source:
        raise CliFailure("--recipe ruler-mlt needs a JSONL file of (instruction, response) pairs", 2)
    method_given = ctx.get_parameter_source("method") is not click.core.ParameterSource.DEFAULT
    for option, given, why in (("--count", count is not None, "it generates no instructions"),
                               ("--method", method_given, "it labels existing pairs and writes nothing"),
                               ("--length-seed", length_seed is not None, "its shuffle seed is --seed N")):
        if given:
            raise CliFailure(f"{option} does not apply to --recipe ruler-mlt ({why})", 2)
    if not seeds:
        return None
    if len(seeds) > 1 or not seeds[0].strip().lstrip("-").isdigit():
        raise CliFailure(f"with --recipe ruler-mlt, --seed is the shuffle seed: one integer (got {', '.join(seeds)})", 2)
    return int(seeds[0])


def parse_length_spec(spec: str) -> dict[str, Any]:
    """"longwriter6k", "uniform:2000-8000" or "fixed:3000" as a `length_distribution`."""
    kind, _, args = spec.strip().partition(":")
    try:
        if kind == "longwriter6k" and not args:
            return {"kind": kind}
        if kind == "uniform":
            low, high = args.split("-")
            return {"kind": kind, "min": int(low), "max": int(high)}
        if kind == "fixed":
            return {"kind": kind, "words": int(args)}
    except ValueError:
        pass
    raise CliFailure(f"--lengths takes longwriter6k, uniform:MIN-MAX or fixed:N; got {spec!r}", 2)


def _note_rejected(source: str | None, rejected: list[dict[str, Any]] | None) -> None:
    for bad in rejected or []:
        note(f"{source}:{bad['line']}: skipped: {bad['error']}")


@dataset_group.command("export")
@click.argument("dataset_id")
@click.option("--format", "fmt", type=click.Choice(DATASET_FORMATS),
              help="longwriter recipe: longwriter (default), alpaca, sharegpt; selflengthen: long (default), gen_sft, "
                   "ext_sft, sharegpt; ruler-mlt: ruler (default), chat-mlt.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
@click.option("--state-length/--no-state-length", default=None,
              help="State the target length in the user turn when the instruction does not (default: as the dataset was built, normally yes).")
@click.pass_context
def dataset_export(ctx, dataset_id, fmt, out_file, state_length) -> None:
    """Export what passes the gates so far (works while running and after a cancel)."""
    _export(make_client(ctx), dataset_id, fmt, out_file, state_length)


@dataset_group.command("delete")
@click.argument("dataset_id")
@click.pass_context
def dataset_delete(ctx, dataset_id) -> None:
    """Delete a finished build with its child jobs and export files (cancel a running one first)."""
    make_client(ctx).delete_dataset(dataset_id)
    click.echo(f"dataset {dataset_id}: deleted")


def _export(client, dataset_id: str, fmt: str, out_file: str | None, state_length: bool | None = None) -> None:
    text = client.export_dataset(dataset_id, fmt, state_length)
    if out_file:
        Path(out_file).write_text(text, encoding="utf-8")
        note(f"{text.count(chr(10))} records written to {out_file}")
    else:
        click.echo(text, nl=False)
