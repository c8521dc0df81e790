"""Stand-in for the embedded model's child process (`python -m modelserver --port N ...`):
the fake server on the port the supervisor chose, with the same parent watch, so the
campaign can SIGKILL "the model process" without loading the real model.

Started by the script fault_env.fake_model_interpreter() writes:
    python -m bench.fault_model_child --config-json '{...}' -m modelserver --port N --parent-pid P ...
"""
from __future__ import annotations

import argparse
import json
import threading

from fakellm.config import FakeConfig
from fakellm.server import serve
from modelserver.__main__ import watch_parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-json", default="{}")
    parser.add_argument("-m", dest="module")  # "modelserver", as ModelProcess asks for it
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, default=0)
    args, _ignored = parser.parse_known_args()  # --n-ctx, --threads, --model...: the fake has its own
    if args.parent_pid:
        threading.Thread(target=watch_parent, args=(args.parent_pid,), daemon=True).start()
    config = FakeConfig()
    config.update(json.loads(args.config_json))
    serve(config, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
