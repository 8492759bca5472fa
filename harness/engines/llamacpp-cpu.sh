#!/usr/bin/env bash
# Recipe of the image aima-llamacpp-cpu: llama.cpp's own llama-server, built for the CPU
# from the llama.cpp tree that PyPI's llama-cpp-python source distribution vendors (no
# registry, no base image). `harness image build --engine llama.cpp` runs this script
# with OUT=<dir>; it leaves OUT/llama-server, and the harness packages that binary with
# the shared libraries it needs into a FROM scratch image labelled with this file's
# SHA-256, so a machine rebuilds only when this recipe changes.
#
# Needs: python3 with pip, cmake and a C++ compiler (Debian: cmake g++).
set -euo pipefail

VERSION=0.3.36 # llama-cpp-python, pinned: the llama.cpp it vendors is the engine under test
: "${OUT:?OUT must name the directory the binary goes to}"
CACHE="${AIMA_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aima-build}"
mkdir -p "$CACHE" "$OUT"

for tool in cmake c++ python3; do
  command -v "$tool" >/dev/null || {
    echo "llamacpp-cpu: $tool is missing; install it (Debian: apt-get install cmake g++ python3-pip)" >&2
    exit 1
  }
done

SDIST="$CACHE/llama_cpp_python-$VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
  echo "step 1/3: downloading llama-cpp-python $VERSION's source distribution from PyPI"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$CACHE"
else
  echo "step 1/3: llama-cpp-python $VERSION's source distribution is cached"
fi

SRC="$CACHE/llama_cpp_python-$VERSION/vendor/llama.cpp"
[ -d "$SRC" ] || tar -xzf "$SDIST" -C "$CACHE"

echo "step 2/3: configuring llama-server (CPU backend, static, no web UI)"
BUILD="$CACHE/llama.cpp-$VERSION-build"
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
  >"$BUILD.configure.log" 2>&1 || { tail -30 "$BUILD.configure.log" >&2; exit 1; }

echo "step 3/3: compiling llama-server with $(nproc) jobs (about 13 CPU-minutes)"
set +o pipefail
cmake --build "$BUILD" --target llama-server -j "$(nproc)" 2>&1 | tee "$BUILD.log" \
  | grep --line-buffered -E '^\[ *[0-9]+%\] Built target' | sed -u 's/^/  /'
status=${PIPESTATUS[0]}
set -o pipefail
if [ "$status" -ne 0 ] || [ ! -x "$BUILD/bin/llama-server" ]; then
  tail -30 "$BUILD.log" >&2
  echo "llamacpp-cpu: compiling llama-server failed (log: $BUILD.log)" >&2
  exit 1
fi
cp "$BUILD/bin/llama-server" "$OUT/llama-server"
echo "built $OUT/llama-server"
