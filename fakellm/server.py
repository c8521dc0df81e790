"""Run the fake server with uvicorn on a socket bound here (so port 0 picks a free port)."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from fakellm.config import FakeConfig

BACKLOG = 4096


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)  # connections queue from now on, even before uvicorn serves
    sock.set_inheritable(True)
    return sock


def _fastest(module: str, name: str) -> str:
    try:
        __import__(module)
        return name
    except ImportError:
        return "auto"


def serve(config: FakeConfig, host: str = "127.0.0.1", port: int = 8000, port_file: str | None = None,
          announce: bool = False) -> None:
    """Serve until interrupted. With port_file, the bound port is written there once listening;
    with announce, the URL is printed to stderr."""
    import uvicorn

    from fakellm.app import create_app

    from agents.text import encode

    encode("warm up")  # load the tokenizer before the first request, not during it
    sock = bind_socket(host, port)
    if port_file:
        tmp = Path(port_file + ".tmp")
        tmp.write_text(str(sock.getsockname()[1]))
        os.replace(tmp, port_file)
    if announce:
        timing = (f"timing on: {config.max_num_seqs} seqs, {config.decode_s_per_token * 1000:g} ms/token"
                  if config.timing else "no latency")
        print(f"fake-llm serving {config.model!r} on http://{host}:{sock.getsockname()[1]}/v1 ({timing})",
              file=sys.stderr, flush=True)
    uv_config = uvicorn.Config(create_app(config), loop=_fastest("uvloop", "uvloop"),
                               http=_fastest("httptools", "httptools"), log_level="warning",
                               access_log=False, lifespan="off", backlog=BACKLOG, timeout_keep_alive=30)
    uvicorn.Server(uv_config).run(sockets=[sock])
