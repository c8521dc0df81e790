"""Shortcuts that submit one kind each and show its scores their own way: `summarize`,
`booookscore`, `write`. The main text is still printed as the kind's view declares."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from api.cli.base import cli, format_score, note
from api.cli.documents import resolve_document, upload_file
from api.cli.jobs import echo_result, finish_with, print_scores, submit_and_follow


@cli.command()
@click.argument("source", metavar="FILE")
@click.option("--method", type=click.Choice(["hierarchical", "incremental"]), default="hierarchical", show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=1), help="Tokens per chunk.")
@click.option("--words", type=click.IntRange(min=1), help="Target length of the summary in words.")
@click.option("--strip-gutenberg", is_flag=True, help="Remove a Project Gutenberg header and licence before uploading.")
@click.option("--score", is_flag=True, help="Also score the summary's coherence (BooookScore).")
@click.option("--protocol", type=click.Choice(["controlled", "paper"]), default="controlled", show_default=True,
              help="paper: the method as published (reference defaults, no length control).")
@click.option("--no-watch", is_flag=True, help="Submit, print the job id and return.")
@click.option("--prompt-set", metavar="NAME", help="A prompt set installed on the server (see `longform prompts list`).")
@click.pass_context
def summarize(ctx, source, method, chunk_size, words, strip_gutenberg, score, protocol, no_watch, prompt_set) -> None:
    """Summarize a book: FILE is a UTF-8 text file or doc:ID."""
    params: dict[str, Any] = {"document_id": resolve_document(ctx, source, strip_gutenberg), "method": method,
                              "score": score, "protocol": protocol}
    if chunk_size:
        params["chunk_size"] = chunk_size
    if words:
        params["target_words"] = words
    if strip_gutenberg and source.startswith("doc:"):  # a stored document is stripped when the job runs
        params["strip_gutenberg"] = True
    final = submit_and_follow(ctx, "summarize", params, watch=not no_watch, prompt_set=prompt_set)
    if final is None:
        return
    if final["status"] == "succeeded":
        echo_result(ctx, final)
        print_scores(final)
        print_protocol(final.get("result") or {})
        coherence = (final.get("result") or {}).get("booookscore")
        if isinstance(coherence, dict) and coherence.get("skipped"):
            note(f"BooookScore skipped: {coherence['skipped']}")
        elif isinstance(coherence, dict):
            print_booookscore(coherence, err=True)
    finish_with(ctx, final)


@cli.command()
@click.argument("target", metavar="JOB_OR_FILE")
@click.option("--mode", type=click.Choice(["per_sentence", "batched"]), help="One judge call per sentence, or batches.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Sentences per judge call in batched mode.")
@click.option("--protocol", type=click.Choice(["controlled", "paper"]), default="controlled", show_default=True,
              help="paper: the method as published (reference defaults, no length control).")
@click.option("--prompt-set", metavar="NAME", help="A prompt set installed on the server (see `longform prompts list`).")
@click.pass_context
def booookscore(ctx, target, mode, batch_size, protocol, prompt_set) -> None:
    """Score a summary's coherence: a summarize job's result, or a text file."""
    if Path(target).is_file():
        params: dict[str, Any] = {"document_id": upload_file(ctx, target, None, False)["id"]}
    else:
        params = {"job_id": target}
    params["protocol"] = protocol
    if mode:
        params["mode"] = mode
    if batch_size:
        params["batch_size"] = batch_size
    final = submit_and_follow(ctx, "booookscore", params, prompt_set=prompt_set)
    if final["status"] == "succeeded":
        print_booookscore(final.get("result") or {})
        print_protocol(final.get("result") or {})
    finish_with(ctx, final)


def print_booookscore(result: dict[str, Any], err: bool = False) -> None:
    """The score, then each flagged sentence with its error types and the judge's questions."""

    def say(line: str) -> None:
        click.echo(line, err=err)

    flagged = [f for f in result.get("flagged") or [] if isinstance(f, dict)]
    line = f"BooookScore: {format_score(result.get('score'))}"
    if result.get("scored") is not None:
        line += f" ({len(flagged)} of {result['scored']} judged sentences flagged"
        if result.get("unparseable"):
            line += f"; {len(result['unparseable'])} left unjudged: the judge's verdicts never parsed"
        line += ")"
    if result.get("mode"):
        line += f" [{result['mode']}]"
    say(line)
    for item in flagged:
        types = item.get("types") or []
        label = ", ".join(types) if isinstance(types, list) else str(types)
        say(f"- [{label or 'unlabelled'}] {item.get('sentence', '')}")
        questions = item.get("questions")
        for question in (questions if isinstance(questions, list) else [questions]) if questions else []:
            say(f"    ? {question}")
    counts = {k: v for k, v in (result.get("type_counts") or {}).items() if v}
    if counts:
        say("types: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))


@cli.command()
@click.argument("instruction")
@click.option("--words", type=click.IntRange(min=1), help="Target length in words.")
@click.option("--method", type=click.Choice(["agentwrite", "single"]), default="agentwrite", show_default=True)
@click.option("--protocol", type=click.Choice(["controlled", "paper"]), default="controlled", show_default=True,
              help="paper: the method as published (reference defaults, no length control).")
@click.option("--no-watch", is_flag=True, help="Submit, print the job id and return.")
@click.option("--prompt-set", metavar="NAME", help="A prompt set installed on the server (see `longform prompts list`).")
@click.pass_context
def write(ctx, instruction, words, method, protocol, no_watch, prompt_set) -> None:
    """Write a long text following INSTRUCTION; prints the text, then its scores on stderr."""
    params: dict[str, Any] = {"instruction": instruction, "method": method, "protocol": protocol}
    if words:
        params["target_words"] = words
    final = submit_and_follow(ctx, "write", params, watch=not no_watch, prompt_set=prompt_set)
    if final is None:
        return
    if final["status"] == "succeeded":
        echo_result(ctx, final)
        print_write_scores(final)
        print_protocol(final.get("result") or {})
    finish_with(ctx, final)


def print_write_scores(job: dict[str, Any]) -> None:
    """Length and scores of a write job, on stderr: words (target), S_l, S_q, S."""
    result = job.get("result") or {}
    words = result.get("word_count")
    if words is None and isinstance(result.get("text"), str):
        from agents.text import count_words

        words = count_words(result["text"])
    target = result.get("target_words") or (job.get("params") or {}).get("target_words")
    note(f"words: {words}" + (f" (target {target})" if target else ""))
    scores = result.get("scores") if isinstance(result.get("scores"), dict) else job.get("scores") or {}
    shown = [f"{name}={format_score(scores.get(name))}" for name in ("S_l", "S_q", "S") if name in scores]
    shown += [f"{k}={format_score(v)}" for k, v in sorted(scores.items()) if k not in ("S_l", "S_q", "S") and isinstance(v, (int, float))]
    if shown:
        status = scores.get("quality_status")
        note("scores: " + "  ".join(shown) + (f"  (quality: {status})" if status and scores.get("S_q") is None else ""))


def print_protocol(result: dict[str, Any]) -> None:
    """Which protocol ran and how it differs from the published method, on stderr."""
    record = result.get("protocol")
    if not isinstance(record, dict):
        return
    comparable = "comparable to the paper" if record.get("comparable_to_paper") else "not comparable to the paper"
    note(f"protocol: {record.get('name')} ({comparable})")
    for difference in record.get("differs_from_paper") or []:
        note(f"  differs: {difference}")
    bundled = [name for name, origin in (record.get("prompts") or {}).items() if origin == "bundled"]
    if bundled:
        note(f"  prompts in Longform's own wording: {', '.join(bundled)} (overlay the paper's files to compare)")
