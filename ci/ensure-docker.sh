#!/usr/bin/env bash
# Makes sure a Docker engine answers before the tests run: starts dockerd when it is
# installed but not running, and waits for it with a deadline.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "error: no Docker engine answers and dockerd is not installed; install Docker (apt-get install docker.io) and retry" >&2
  exit 1
fi
echo "starting dockerd (log: /tmp/aima-ci-dockerd.log)" >&2
nohup dockerd >/tmp/aima-ci-dockerd.log 2>&1 &
deadline=$((SECONDS + 60))
until docker info >/dev/null 2>&1; do
  if (( SECONDS >= deadline )); then
    echo "error: dockerd did not answer within 60 s; see /tmp/aima-ci-dockerd.log" >&2
    exit 1
  fi
  sleep 0.5
done
