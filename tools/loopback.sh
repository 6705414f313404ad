#!/usr/bin/env bash
# Run a command in a loopback-only network namespace (the cluster tests' and the device check's safety
# net: everything a local Ray cluster starts can reach 127.0.0.1 and nothing else). A new PID namespace
# too, so that every process the command leaves behind dies with it.
#   tools/loopback.sh .venv/bin/python -m pytest -m cluster
set -euo pipefail
exec unshare --net --pid --fork --kill-child --mount-proc bash -c 'ip link set lo up && "$@"' bash "$@"
