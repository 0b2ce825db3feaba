#!/usr/bin/env bash
# Stops what up.sh started: exactly the processes recorded in .run/*.pid
# (TERM, then KILL after a deadline), and removes those pid files. Logs stay.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

shopt -s nullglob
pidfiles=("$RUN"/*.pid)
pids=()
for f in "${pidfiles[@]}"; do
	pid=$(cat "$f" 2>/dev/null) || pid=
	if recorded "$pid" "$f"; then
		pids+=("$pid")
	fi
done
stop_pids "${COUPON_DOWN_TIMEOUT:-20}" "${pids[@]}"
rm -f -- "${pidfiles[@]}"
