#!/usr/bin/env bash
# The TypeScript SDK (mobile-sdk-spec/typescript): its generated HTTP layer
# is fresh, it builds under tsc --strict with no Node types in src/, and its
# tests pass: every conformance vector (mobile-sdk-spec/conformance) and the
# integration tests against a test build of the server (-tags
# tokenwarm_testclock: a clock the tests move, shared with the built-in
# emulator), including the month-offline scenario. About half a minute.
# Run by ./scripts/test after go test; can be run alone from anywhere.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."
ROOT=$(pwd)

die() { printf '50-typescript-sdk: error: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node not found (Node.js >= 20)"
command -v npm >/dev/null 2>&1 || die "npm not found"
command -v go >/dev/null 2>&1 || die "go not found"

# The test build's own Go tests (the suite builds without the tag).
go test -race -count=1 -tags tokenwarm_testclock -run '^TestTestBuild' ./cmd/server/

SDK="$ROOT/mobile-sdk-spec/typescript"
# The server the integration tests start: a test build, into an ignored path.
go build -tags tokenwarm_testclock -o "$SDK/.bin/tokenwarm-testclock" ./cmd/server
export TOKENWARM_TEST_SERVER_BIN="$SDK/.bin/tokenwarm-testclock"

cd "$SDK"
# npm ci writes node_modules/.package-lock.json; reinstall when it is missing
# or older than the committed lock file.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
	npm ci --no-audit --no-fund
fi
rm -rf build dist
npm run --silent build
npm run --silent check-generated
npm test
