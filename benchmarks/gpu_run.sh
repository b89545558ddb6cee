#!/usr/bin/env bash
# The GPU run as the GPU machine's one command (benchmarks/README.md, "The GPU run"): keep what
# this call carried, unpack the carried Ray once all its parts are there, then every part.
#
#   bash benchmarks/gpu_run.sh --out "$OUT" [benchmarks/gpu_run.py's flags]
#
# Without --budget the run takes 560 s, leaving the device call's 600 s room for this script,
# Python's start and the files' return.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHON
bash benchmarks/gpu_wheels.sh stash install || echo "(the carried Ray is not installed: the ray part will say why)"
case " $* " in
*" --budget"*) exec "$PYTHON" benchmarks/gpu_run.py "$@" ;;
*) exec "$PYTHON" benchmarks/gpu_run.py --budget 560 "$@" ;;
esac
