#!/usr/bin/env bash
# Ensures MariaDB answers on 127.0.0.1:3306 (root, no password, over TCP) and
# Redis on 127.0.0.1:6379, installing them with apt and starting them when
# needed, and that nats-server is installed (the local stack and the tests
# start their own, on ports of their own). With --protoc, also ensures protoc
# and the well-known .proto files.
# Idempotent: when everything already answers it returns at once.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

want_protoc=false
for arg in "$@"; do
	case $arg in
	--protoc) want_protoc=true ;;
	*) die "usage: $PROG [--protoc]" ;;
	esac
done

mariadb_ok() {
	mariadb --protocol=tcp -h127.0.0.1 -P3306 -uroot --connect-timeout=2 -e 'select 1' >/dev/null 2>&1
}

redis_ok() {
	[ "$(timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]
}

nats_ok() {
	command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]
}

protoc_ok() {
	command -v protoc >/dev/null 2>&1 && [ -f /usr/include/google/protobuf/timestamp.proto ]
}

has_systemd() {
	[ -d /run/systemd/system ]
}

apt_install() {
	local log
	log=$(mktemp)
	if ! as_root apt-get update -qq >"$log" 2>&1 ||
		! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 "$@" >>"$log" 2>&1; then
		tail_log "$log"
		rm -f "$log"
		die "apt-get install $* failed"
	fi
	rm -f "$log"
}

# Where the server's own output goes when deps.sh starts it without
# systemd: Debian's default config writes no error log (its output would go
# to /dev/null), so it is named on the command line.
MARIADB_LOG=/var/log/mysql/error.log
MARIADB_PID=/run/mysqld/mysqld.pid

start_mariadb() {
	if has_systemd; then
		as_root systemctl start mariadb
		return
	fi
	local d
	for d in /run/mysqld /var/log/mysql; do
		[ -d "$d" ] || as_root install -d -o mysql -g mysql "$d"
	done
	if [ ! -d /var/lib/mysql/mysql ]; then
		local log
		log=$(mktemp)
		if ! as_root mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$log" 2>&1; then
			tail_log "$log"
			die "mariadb-install-db failed"
		fi
		rm -f "$log"
	fi
	# The pid file makes "already running" mean this server: another
	# mariadbd on the machine (mariadb-extra.sh's, a test's) is not it.
	as_root start-stop-daemon --start --oknodo --background --pidfile "$MARIADB_PID" --exec /usr/sbin/mariadbd -- \
		--user=mysql --pid-file="$MARIADB_PID" --log-error="$MARIADB_LOG"
}

# mariadb_failed shows why MariaDB did not start.
mariadb_failed() {
	if has_systemd; then
		as_root journalctl -u mariadb -n 50 --no-pager >&2 || true
	elif as_root test -s "$MARIADB_LOG"; then
		as_root tail -n 50 "$MARIADB_LOG" >&2
	else
		warn "$MARIADB_LOG is empty: mariadbd exited before logging; try: sudo /usr/sbin/mariadbd --user=mysql"
	fi
	die "MariaDB did not start"
}

start_redis() {
	if has_systemd; then
		as_root systemctl start redis-server
		return
	fi
	local d
	for d in /var/lib/redis /var/log/redis; do
		[ -d "$d" ] || as_root install -d -o redis -g redis "$d"
	done
	as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
		--dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null
}

# allow_root_over_tcp lets root log in over TCP without a password, as the
# tests and deploy/local configs expect. Fresh Debian installs allow root only
# through the unix socket, which is how this connects. Unless the server skips
# name resolution, 127.0.0.1 is seen as localhost, so root@localhost needs the
# empty password too; it keeps socket authentication.
allow_root_over_tcp() {
	root_sql "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
		ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '';
		GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
	mariadb_ok && return
	root_sql "ALTER USER 'root'@'localhost'
		IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');"
}

root_sql() {
	as_root mariadb -uroot -e "$1" ||
		die "cannot reach MariaDB as root over its unix socket to allow root over TCP"
}

if mariadb_ok && redis_ok && nats_ok && { ! $want_protoc || protoc_ok; }; then
	exit 0
fi

missing=()
{ [ -x /usr/sbin/mariadbd ] && command -v mariadb >/dev/null 2>&1; } || missing+=(mariadb-server)
{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || missing+=(redis-server)
nats_ok || missing+=(nats-server)
if $want_protoc && ! protoc_ok; then
	missing+=(protobuf-compiler libprotobuf-dev)
fi
if ((${#missing[@]})); then
	apt_install "${missing[@]}"
fi
if $want_protoc && ! protoc_ok; then
	die "protoc or /usr/include/google/protobuf/timestamp.proto still missing after installing protobuf-compiler libprotobuf-dev"
fi

if ! mariadb_ok; then
	listening 3306 || start_mariadb
	if ! wait_for 60 "MariaDB on 127.0.0.1:3306" listening 3306; then
		mariadb_failed
	fi
	mariadb_ok || allow_root_over_tcp
	mariadb_ok || die "MariaDB answers on 127.0.0.1:3306 but root cannot log in without a password"
fi

if ! redis_ok; then
	start_redis
	if ! wait_for 30 "Redis on 127.0.0.1:6379" redis_ok; then
		tail_log /var/log/redis/ci.log
		die "Redis did not start"
	fi
fi
