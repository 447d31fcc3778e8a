#!/usr/bin/env bash
# Checks deploy/prometheus/ with promtool: the Prometheus configuration of
# deploy/compose.yaml and its rule files parse (`promtool check config`),
# and every alert's unit tests pass (`promtool test rules`).
# Run by ./scripts/test after go test; can be run alone from anywhere.
#
# promtool comes from PATH, else from Debian's `prometheus` package. Only
# promtool is needed, and installing the package would also start a
# Prometheus daemon through its init script on a machine without a
# policy-rc.d, so the package is fetched with `apt-get download` and
# promtool alone is unpacked into a cache directory (no root needed unless
# the package lists must be fetched first).
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."

die() { printf '70-prometheus-rules: error: %s\n' "$*" >&2; exit 1; }

find_promtool() {
	if command -v promtool >/dev/null 2>&1; then
		command -v promtool
		return 0
	fi
	local cache=${XDG_CACHE_HOME:-$HOME/.cache}/tokenwarm/promtool
	if [[ -x "$cache/promtool" ]]; then
		echo "$cache/promtool"
		return 0
	fi
	command -v apt-get >/dev/null 2>&1 || die "promtool not found and no apt-get to fetch Debian's prometheus package"
	local tmp
	tmp=$(mktemp -d)
	# As root, apt downloads as the _apt user: let it write here.
	chmod 755 "$tmp"
	if [[ $(id -u) -eq 0 ]] && id -u _apt >/dev/null 2>&1; then
		chown _apt "$tmp"
	fi
	if ! (cd "$tmp" && apt-get download -q prometheus >&2); then
		echo "fetching the package lists (apt-get update)" >&2
		local sudo=()
		if [[ $(id -u) -ne 0 ]]; then
			command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install promtool (apt-get install prometheus)"
			sudo=(sudo)
		fi
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
		(cd "$tmp" && apt-get download -q prometheus >&2) || die "apt-get download prometheus failed"
	fi
	dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
	[[ -x "$tmp/root/usr/bin/promtool" ]] || die "the prometheus package has no usr/bin/promtool"
	mkdir -p "$cache"
	cp "$tmp/root/usr/bin/promtool" "$cache/promtool.tmp"
	mv "$cache/promtool.tmp" "$cache/promtool"
	rm -rf -- "$tmp"
	echo "$cache/promtool"
}

PROMTOOL=$(find_promtool)
"$PROMTOOL" --version | head -1

"$PROMTOOL" check config deploy/prometheus/prometheus.yml
"$PROMTOOL" test rules deploy/prometheus/tests/*.yml
