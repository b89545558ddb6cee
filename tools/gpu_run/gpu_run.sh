#!/usr/bin/env bash
# The GPU run as the GPU machine's one command (tools/gpu_run/README.md): keep what
# this call carried, unpack the carried Ray once all its parts are there, then every part.
#
#   bash tools/gpu_run/gpu_run.sh --out "$OUT" [tools/gpu_run/gpu_run.py's flags]
#
# Without --budget the run takes 560 s, leaving the device call's 600 s room for this script,
# Python's start and the files' return.
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
export PYTHON
bash tools/gpu_run/gpu_wheels.sh stash install || echo "(the carried Ray is not installed: the ray part will say why)"
case " $* " in
*" --budget"*) exec "$PYTHON" tools/gpu_run/gpu_run.py "$@" ;;
*) exec "$PYTHON" tools/gpu_run/gpu_run.py --budget 560 "$@" ;;
esac
