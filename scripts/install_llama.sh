#!/usr/bin/env bash
# Install llama-cpp-python into a venv from a wheel built with portable options.
#
# Usage: scripts/install_llama.sh PIP VERSION "CMAKE_ARGS"
#
# pip's own wheel cache keys a source build by the package version only, so it would hand
# back a wheel built earlier with other options (a native build that crashes on AMX CPUs).
# This keeps its own cache, one folder per (version, options), so a changed option rebuilds.
set -euo pipefail
PIP=$1
VERSION=$2
OPTIONS=$3

KEY=$(printf '%s\n%s\n' "$VERSION" "$OPTIONS" | sha256sum | cut -c1-16)
CACHE="${LONGFORM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/longform/wheels}/llama-cpp-python-$VERSION-$KEY"

if ! ls "$CACHE"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $VERSION (about 7 minutes on 2 cores) with CMAKE_ARGS=$OPTIONS"
  BUILD=$(mktemp -d)
  CMAKE_ARGS="$OPTIONS" "$PIP" wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python \
    -w "$BUILD" "llama-cpp-python==$VERSION"
  mkdir -p "$CACHE"
  printf 'version=%s\nCMAKE_ARGS=%s\n' "$VERSION" "$OPTIONS" >"$BUILD/BUILD_OPTIONS"
  mv "$BUILD"/* "$CACHE"/
  rmdir "$BUILD"
fi
"$PIP" install -q --force-reinstall --no-deps "$CACHE"/llama_cpp_python-*.whl
# The wheel's own dependencies (numpy, jinja2, diskcache, typing-extensions) from the index.
"$PIP" install -q "llama-cpp-python==$VERSION"
