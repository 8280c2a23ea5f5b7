#!/usr/bin/env bash
# Run podrun's whole test suite (as root: real namespaces, mounts, cgroups, gpg).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q tests "$@"
