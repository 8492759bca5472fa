#!/usr/bin/env bash
# Installs the reference tools the tests drive: Chromium and chromedriver (and cmake and g++,
# which build the real engines, and debootstrap, which makes the vLLM image's Debian base)
# from Debian, and from PyPI: openapi-spec-validator (the
# OpenAPI document), schemathesis (fuzzes every API operation for server errors),
# openai (the official client, pointed at the gateway), prometheus-client (its
# OpenMetrics and Prometheus text parsers read /metrics), mcp (the reference MCP SDK,
# a client of `aima mcp`), gguf and safetensors (the formats' own writers make the
# model files AIMA reads in the model-memory tests and the tiny real models), and
# tokenizers (builds the tiny Hugging Face model's tokenizer.json).
set -euo pipefail

# The dashboard tests drive Debian's Chromium through its chromedriver; nothing downloads
# a browser of its own.
# The real-engine images are compiled here from the registries' sources: cmake and g++;
# the vLLM image's base is Debian made by debootstrap (there is no registry to pull from).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || ! command -v cmake >/dev/null \
  || ! command -v g++ >/dev/null || [ ! -x /usr/sbin/debootstrap ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver cmake g++ \
    debootstrap >/dev/null
fi

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  'schemathesis>=4.3,<5' 'openapi-spec-validator>=0.7,<0.10' 'openai>=1.40,<4' \
  'prometheus-client>=0.20,<1' 'mcp>=1.10,<3' 'gguf>=0.10,<1' 'safetensors>=0.4,<1' 'numpy>=1.24,<3' \
  'tokenizers>=0.15,<1'
# pyenv installs entry points behind shims that need a rehash; elsewhere this is a no-op.
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
for module in openai prometheus_client mcp gguf safetensors numpy tokenizers; do
  python3 -c "import $module" || { echo "ci/install-tools.sh: the $module package does not import" >&2; exit 1; }
done
for tool in schemathesis openapi-spec-validator; do
  if ! command -v "$tool" >/dev/null 2>&1 \
    && [ ! -x "$(python3 -m site --user-base)/bin/$tool" ]; then
    echo "ci/install-tools.sh: $tool was installed but is not on PATH" >&2
    exit 1
  fi
done
