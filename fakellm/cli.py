"""`longform fake-llm`: run the fake vLLM server standalone (also `python -m fakellm`)."""
from __future__ import annotations

import json

import click

from fakellm.config import FakeConfig

_TIMING_MS = {"decode_ms_per_token": "decode_s_per_token", "prefill_ms_per_token": "prefill_s_per_token",
              "ttft_ms": "ttft_s"}
_PLAIN = ("model", "max_model_len", "token_scale", "seed", "natural_min_words", "natural_max_words", "max_num_seqs",
          "scheduling_policy",
          "error_rate", "rate_limit_rate", "hang_rate", "hang_s", "truncate_rate", "malformed_json_rate",
          "die_after")


def config_from_options(options: dict) -> FakeConfig:
    """FakeConfig defaults, then --config-json, then the flags given. Any timing value given
    turns the timing model on."""
    cfg = FakeConfig()
    if options.get("config_json"):
        cfg.update(json.loads(options["config_json"]))
    changes = {name: options[name] for name in _PLAIN if options.get(name) is not None}
    for flag, field in _TIMING_MS.items():
        if options.get(flag) is not None:
            changes[field] = options[flag] / 1000.0
            changes.setdefault("timing", True)
    if options.get("timing") is not None:
        changes["timing"] = options["timing"]
    cfg.update(changes)
    return cfg


@click.command("fake-llm")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int, help="0 picks a free port.")
@click.option("--model", default=None, help="Served model name [fake-model].")
@click.option("--max-model-len", type=int, default=None, help="Context window in tokens [8192].")
@click.option("--token-scale", type=float, default=None,
              help="Tokens per cl100k token of the model's tokenizer, >= 1 (1.65: about 1.9 per word) [1].")
@click.option("--seed", type=int, default=None, help="Server seed for text and fault draws [0].")
@click.option("--natural-min-words", type=int, default=None, help="Natural length range, low end [600].")
@click.option("--natural-max-words", type=int, default=None, help="Natural length range, high end [1500].")
@click.option("--timing/--no-timing", default=None, help="vLLM timing model (off by default).")
@click.option("--max-num-seqs", type=int, default=None, help="Sequences decoding at once [64].")
@click.option("--scheduling-policy", type=click.Choice(["fcfs", "priority"]), default=None,
              help="Waiting order: arrival, or the request's `priority` (lower first) [fcfs].")
@click.option("--decode-ms-per-token", type=float, default=None, help="Decode time per token [2].")
@click.option("--prefill-ms-per-token", type=float, default=None, help="Prefill time per uncached prompt token [0.05].")
@click.option("--ttft-ms", type=float, default=None, help="Base time to first token [20].")
@click.option("--error-rate", type=float, default=None, help="Share of requests answered with HTTP 500.")
@click.option("--rate-limit-rate", type=float, default=None, help="Share answered with HTTP 429.")
@click.option("--hang-rate", type=float, default=None, help="Share that hang for --hang-s seconds.")
@click.option("--hang-s", type=float, default=None, help="How long a hang lasts [3600].")
@click.option("--truncate-rate", type=float, default=None, help="Share cut short (finish_reason length).")
@click.option("--malformed-json-rate", type=float, default=None, help="Share of JSON answers that are broken.")
@click.option("--die-after", type=int, default=None, help="Exit abruptly after this many generation requests.")
@click.option("--config-json", default=None, hidden=True, help="Full FakeConfig as JSON (used by the runner).")
@click.option("--port-file", default=None, hidden=True, help="Write the bound port here once listening.")
def fake_llm(host: str, port: int, port_file: str | None, **options) -> None:
    """Run the fake OpenAI-compatible, vLLM-like model server used by tests and benchmarks."""
    from fakellm.server import serve

    try:
        cfg = config_from_options(options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    serve(cfg, host=host, port=port, port_file=port_file, announce=not port_file)
