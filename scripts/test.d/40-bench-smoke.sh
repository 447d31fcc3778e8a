#!/usr/bin/env bash
# A smoke run of the pull benchmark (scripts/bench): every phase must run
# and get some successful requests and no answer other than 200. Its
# timings are not checked (no thresholds: slow machines pass). About 25 s.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."
exec ./scripts/bench -duration 2s -connections 3 -concurrency 2
