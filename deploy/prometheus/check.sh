#!/usr/bin/env bash
# Checks the alert rules: `promtool check rules` and the rule unit tests
# (alerts_test.yml). promtool comes from Debian's prometheus package; when it
# is not on PATH the package is downloaded with apt and only promtool is
# unpacked (into a cache directory), so no Prometheus server is installed or
# started on the machine.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT/deploy/prometheus"

promtool=$(command -v promtool 2>/dev/null) || promtool=
if [ -z "$promtool" ]; then
	cache=${XDG_CACHE_HOME:-$HOME/.cache}/coupon/prometheus
	promtool=$cache/usr/bin/promtool
	if [ ! -x "$promtool" ]; then
		tmp=$(mktemp -d)
		trap 'rm -rf "$tmp"' EXIT
		as_root apt-get update -qq >/dev/null 2>&1 || warn "apt-get update failed; trying the package lists there are"
		(cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1) ||
			die "apt-get download prometheus failed (Debian's prometheus package provides promtool)"
		mkdir -p "$cache"
		dpkg-deb -x "$tmp"/prometheus_*.deb "$cache"
		[ -x "$promtool" ] || die "no usr/bin/promtool in Debian's prometheus package"
	fi
fi
"$promtool" --version 2>&1 | head -1
"$promtool" check rules alerts.yml
"$promtool" test rules alerts_test.yml
