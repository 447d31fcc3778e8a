#!/usr/bin/env bash
# Brief fuzzing of the untrusted-input parsers on every test run. A failing
# input is written under the package's testdata/fuzz and fails the run.
set -euo pipefail
cd "$(dirname "$0")/../.."
FUZZTIME="${TOKENWARM_FUZZTIME:-10s}"
go test -run='^$' -fuzz='^FuzzVerify$' -fuzztime="$FUZZTIME" ./devices
go test -run='^$' -fuzz='^FuzzDeviceTokenEndpoint$' -fuzztime="$FUZZTIME" ./handlers
