#!/usr/bin/env bash
# Lints openapi.yaml and the generated mobile-sdk-spec/openapi.mobile.yaml
# with Redocly CLI (recommended-strict; the version pinned in
# tools/openapi/package-lock.json; rules in tools/openapi/redocly.yaml), then
# generates TypeScript from the mobile spec with openapi-typescript and
# compiles it with `tsc --strict` together with tools/openapi/mobile-check.ts,
# and checks that it has no admin, metrics, probe or callback operation.
# Run by ./scripts/test after go test; can be run alone from anywhere.
# Fails on lint errors; warnings are printed. (The mobile spec's staleness
# is checked by go test: TestMobileSpecUpToDate in tools/mobilespec.)
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

npx --no-install redocly lint ../../openapi.yaml ../../mobile-sdk-spec/openapi.mobile.yaml

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT
npx --no-install openapi-typescript ../../mobile-sdk-spec/openapi.mobile.yaml -o "$tmp/mobile.d.ts"
cp mobile-check.ts "$tmp/mobile-check.ts"
npx --no-install tsc --strict --noEmit --target es2022 --module nodenext --moduleResolution nodenext \
	"$tmp/mobile.d.ts" "$tmp/mobile-check.ts" || die "the TypeScript generated from the mobile spec does not compile under tsc --strict"
if grep -nE '^\s*("/(admin|metrics|healthz|readyz|v1/oauth/callback)[^"]*"|getMetrics|getHealth|getReady|oauthCallback|admin[A-Z][A-Za-z]*): \{' "$tmp/mobile.d.ts"; then
	die "the TypeScript generated from the mobile spec has a non-mobile operation (above)"
fi
echo "openapi-typescript: the mobile client compiles under tsc --strict and has only mobile operations"
