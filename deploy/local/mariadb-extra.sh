#!/usr/bin/env bash
# A second, throwaway MariaDB server on 127.0.0.1:PORT (default 3307) for a
# second coupon shard instance: root without a password over TCP,
# max_connections 300, data in a temporary directory.
#
#   mariadb-extra.sh start [PORT]   start it unless it already answers
#   mariadb-extra.sh status [PORT]  say whether it answers
#   mariadb-extra.sh stop [PORT]    stop the server this script started; remove its data
#
# Socket, pid and the path of the data directory are kept in
# ${COUPON_RUN_DIR:-.run}/mariadb-PORT.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	die "usage: $PROG start|stop|status [PORT]"
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	usage
fi
cmd=$1
port=${2:-3307}
if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
	die "bad port $port"
fi
state=$RUN/mariadb-$port

db_ok() {
	mariadb --protocol=tcp -h127.0.0.1 -P"$port" -uroot --connect-timeout=2 -e 'select 1' >/dev/null 2>&1
}

# pid_of: the pid of the server this script started, if it runs.
pid_of() {
	local pid
	pid=$(cat "$state/pid" 2>/dev/null) || return 1
	recorded "$pid" "$state/pid" && echo "$pid"
}

stop() {
	local dir pid
	dir=$(cat "$state/dir" 2>/dev/null) || dir=
	if pid=$(pid_of); then
		stop_pids 60 "$pid"
	fi
	# Only ever remove a directory this script made.
	case $dir in
	*/coupon-mariadb-"$port".*) rm -rf -- "$dir" ;;
	esac
	rm -rf -- "$state"
}

start() {
	if pid_of >/dev/null && db_ok; then
		return
	fi
	stop # whatever is left of an earlier run
	listening "$port" && die "127.0.0.1:$port is taken by a process this script did not start"

	mkdir -p "$state"
	local dir sock
	dir=$(mktemp -d "${TMPDIR:-/tmp}/coupon-mariadb-$port.XXXXXX")
	echo "$dir" >"$state/dir"
	# Unix socket paths are limited to 108 bytes.
	sock=$state/mysqld.sock
	if ((${#sock} > 100)); then
		sock=$dir/mysqld.sock
	fi
	cat >"$dir/my.cnf" <<-CNF
		[mysqld]
		datadir = $dir/data
		port = $port
		bind-address = 127.0.0.1
		socket = $sock
		pid-file = $dir/mysqld.pid
		log-error = $dir/error.log
		max_connections = 300
		skip-name-resolve
		character-set-server = utf8mb4
		collation-server = utf8mb4_general_ci
	CNF
	# mariadbd refuses to run as root unless told to.
	local user=()
	if [ "$(id -u)" -eq 0 ]; then
		user=(--user=root)
	fi
	mariadb-install-db --defaults-file="$dir/my.cnf" "${user[@]}" \
		--auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 ||
		fail "$dir/install.log"

	setsid "$MARIADBD" --defaults-file="$dir/my.cnf" "${user[@]}" </dev/null >>"$dir/error.log" 2>&1 9>&- &
	echo $! >"$state/pid"
	local pid=$!
	ready() { dead "$pid" || db_ok; }
	if ! wait_for 60 "MariaDB on 127.0.0.1:$port" ready || dead "$pid"; then
		fail "$dir/error.log"
	fi
}

fail() {
	tail_log "$1"
	stop
	die "MariaDB on 127.0.0.1:$port did not start"
}

# The server lives in /usr/sbin, which a normal user's PATH lacks.
MARIADBD=$(command -v mariadbd 2>/dev/null || echo /usr/sbin/mariadbd)
[ -x "$MARIADBD" ] || die "mariadbd not found in PATH or /usr/sbin (deploy/local/deps.sh installs mariadb-server)"

lock "mariadb-$port"

case $cmd in
start)
	start
	;;
stop)
	stop
	;;
status)
	if ! pid=$(pid_of) || ! db_ok; then
		die "MariaDB on 127.0.0.1:$port is not running (or not started by $PROG)"
	fi
	echo "MariaDB on 127.0.0.1:$port, pid $pid"
	;;
*)
	usage
	;;
esac
