#!/usr/bin/env bash
# Write constraints.txt: the exact versions installed in the venv and in the code sandbox's
# Python, so that `make setup` on a fresh machine installs the set the suite last passed with
# instead of whatever was released since (openai 3 over httpx2 once arrived that way and broke
# the suite). Run `make lock` after a change of pyproject.toml's dependencies and a green suite.
#
# Usage: scripts/lock.sh PIP SANDBOX_PYTHON_DIR
set -euo pipefail
PIP=$1
SANDBOX=$2
PYVER=$("$(dirname "$PIP")/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
SITE=$(ls -d "$SANDBOX"/lib/python*/site-packages)
{
  echo "# The versions \`make setup\` installs on CPython $PYVER (scripts/lock.sh; \`make lock\` refreshes it)."
  echo "# Other Python versions install the newest releases pyproject.toml's ranges allow."
  # llama-cpp-python is built from source by scripts/install_llama.sh at the Makefile's version.
  { "$PIP" freeze --exclude-editable; "$PIP" list --path "$SITE" --format=freeze; } 2>/dev/null \
    | grep -v -e ' @ ' -e '^llama' | awk -F'==' '!seen[tolower($1)]++' | sort -f  # the venv's first
} >constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages, CPython $PYVER)"
