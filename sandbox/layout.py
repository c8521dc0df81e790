"""Where the sandbox's Python lives and how to tell it is complete (shared by the runner
and by `python -m sandbox.build`, which makes it)."""
from __future__ import annotations

import json
import os
from pathlib import Path

BUILD_FORMAT = 1
MARKER = "longform-sandbox.json"


def default_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "longform" / "sandbox-python"


def read_marker(dest: Path) -> dict | None:
    """What was built at `dest`, or None when nothing usable is there."""
    try:
        marker = json.loads((Path(dest) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != BUILD_FORMAT:
        return None
    if not (Path(dest) / "bin" / "python3").is_file():
        return None
    return marker
