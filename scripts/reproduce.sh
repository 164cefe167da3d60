#!/usr/bin/env bash
# Regenerate every number and figure of docs/results.md (see scripts/reproduce.py --help).
# Needs the environment of scripts/install.sh; each part states its running time when it finishes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
exec python scripts/reproduce.py "$@"
