#!/usr/bin/env bash
# For GPU runners (an NVIDIA GPU, its driver and the NVIDIA container toolkit): the whole
# suite plus the @gpu scenarios, which fail loudly when no GPU is found.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/ensure-docker.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
cargo test --workspace --features gpu
