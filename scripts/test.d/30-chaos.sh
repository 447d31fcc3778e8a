#!/usr/bin/env bash
# A bounded chaos run (see scripts/chaos): 3 replicas, a crash-restarted
# PostgreSQL, SIGKILLs under load. About a minute and a half on two cores.
# TOKENWARM_CHAOS_ARGS replaces the arguments, e.g. "-duration 2m".
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."
# shellcheck disable=SC2086
exec ./scripts/chaos ${TOKENWARM_CHAOS_ARGS:--duration 45s -users 6 -callers 12 -min-refreshes 30}
