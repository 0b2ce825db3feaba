# shellcheck shell=bash
# Helpers shared by the deploy/local scripts; sourced, never run.

# ROOT is the repository; RUN holds the state of everything these scripts start.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this file
RUN=${COUPON_RUN_DIR:-$ROOT/.run}
PROG=$(basename "$0")
# The DTM client's logger reads LOG_LEVEL when it loads and complains when it
# is unset; our binaries set their own levels afterwards.
export LOG_LEVEL=${LOG_LEVEL:-WARN}

die() {
	printf '%s: %s\n' "$PROG" "$*" >&2
	exit 1
}

warn() {
	printf '%s: %s\n' "$PROG" "$*" >&2
}

# wait_for SECONDS WHAT CMD... polls CMD until it succeeds; false after SECONDS.
wait_for() {
	local secs=$1 what=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			warn "timed out after ${secs}s waiting for $what"
			return 1
		fi
		sleep 0.2
	done
}

alive() {
	[ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null
}

dead() {
	! alive "$1"
}

# listening PORT: whether something accepts TCP connections on 127.0.0.1:PORT.
listening() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	timeout 2 bash -c ': </dev/tcp/127.0.0.1/$1' _ "$1" 2>/dev/null
}

# recorded PID FILE: whether PID, read from FILE, is alive and already ran
# when FILE was written; a process that later reused the pid (say, after a
# reboot) is younger than FILE.
recorded() {
	local pid=$1 file=$2 etimes mtime
	[[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
	etimes=$(ps -o etimes= -p "$pid") || return 1
	mtime=$(stat -c %Y "$file") || return 1
	((etimes + 2 >= $(date +%s) - mtime))
}

# stop_pids SECONDS PID...: TERM, then KILL what is still alive after SECONDS.
stop_pids() {
	local secs=$1 pid
	shift
	for pid in "$@"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	local deadline=$((SECONDS + secs))
	for pid in "$@"; do
		while alive "$pid" && ((SECONDS < deadline)); do
			sleep 0.2
		done
		if alive "$pid"; then
			warn "pid $pid ignored TERM for ${secs}s; sending KILL"
			kill -KILL "$pid" 2>/dev/null || true
			wait_for 10 "pid $pid to exit after KILL" dead "$pid" || true
		fi
	done
}

# lock NAME: holds $RUN/.NAME.lock until the script exits, so that one
# invocation at a time manages NAME. Children must not inherit fd 9
# (start daemons with 9>&-), or they would hold the lock forever.
lock() {
	mkdir -p "$RUN"
	exec 9>"$RUN/.$1.lock"
	flock -w 120 9 || die "another invocation holds $RUN/.$1.lock"
}

# as_root CMD...: runs CMD as root, through sudo when not root already.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo -n "$@"
	else
		die "need root for: $*"
	fi
}

# tail_log FILE: the end of a log, for failure messages.
tail_log() {
	[ -f "$1" ] || return 0
	printf -- '--- last lines of %s ---\n' "$1" >&2
	tail -n 40 "$1" >&2 || true
}
