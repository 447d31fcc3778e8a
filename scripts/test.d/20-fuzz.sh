#!/usr/bin/env bash
# Brief fuzzing of the untrusted-input parsers on every test run. A failing
# input is written under the package's testdata/fuzz and fails the run.
#
# The budget is a count of executions, not a duration: with a duration
# -fuzztime, Go 1.26's fuzz coordinator can report a bare "context deadline
# exceeded" at the deadline with no failing input (golang/go#75804, fixed in
# Go 1.27). A count has no deadline to race. The counts are about ten seconds
# of work each on a two-core machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run='^$' -fuzz='^FuzzVerify$' -fuzztime="${TOKENWARM_FUZZ_VERIFY_EXECS:-30000}x" ./devices
go test -run='^$' -fuzz='^FuzzDeviceTokenEndpoint$' -fuzztime="${TOKENWARM_FUZZ_TOKEN_EXECS:-3000}x" ./handlers
