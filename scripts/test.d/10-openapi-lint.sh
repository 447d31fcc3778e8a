#!/usr/bin/env bash
# Lints openapi.yaml with Redocly CLI (the version pinned in
# tools/openapi/package-lock.json; rules in tools/openapi/redocly.yaml).
# Run by ./scripts/test after go test; can be run alone from anywhere.
# Fails on lint errors; warnings are printed.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../tools/openapi"

die() { printf '10-openapi-lint: error: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node not found (Redocly CLI needs Node.js >= 20.19)"
command -v npm >/dev/null 2>&1 || die "npm not found"

# No network calls besides the npm registry: no telemetry, no update check.
export REDOCLY_TELEMETRY=off
export REDOCLY_SUPPRESS_UPDATE_NOTICE=true

# npm ci writes node_modules/.package-lock.json; reinstall when it is missing
# or older than the committed lock file.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
	npm ci --no-audit --no-fund
fi

npx --no-install redocly lint ../../openapi.yaml
