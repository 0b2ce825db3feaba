#!/usr/bin/env bash
# A local three-master Redis Cluster on 127.0.0.1:BASE_PORT..BASE_PORT+2
# (default 7001), without persistence, for tests and demos of cluster mode.
#
#   redis-cluster.sh start [BASE_PORT]   start it unless it is healthy; print the seed addresses
#   redis-cluster.sh status [BASE_PORT]  print the seed addresses if healthy, else fail
#   redis-cluster.sh stop [BASE_PORT]    stop the nodes this script started; remove their data
#
# Node data, logs and pid files live in a temporary directory recorded in
# ${COUPON_RUN_DIR:-.run}/redis-cluster-BASE_PORT/dir.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	die "usage: $PROG start|stop|status [BASE_PORT]"
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	usage
fi
cmd=$1
base=${2:-7001}
if ! [[ $base =~ ^[0-9]+$ ]] || ((base < 1 || base + 10002 > 65535)); then
	die "bad base port $base (cluster bus ports are node port + 10000)"
fi
ports=("$base" "$((base + 1))" "$((base + 2))")
nodes=("${ports[@]/#/127.0.0.1:}")
addrs=$(IFS=,; echo "${nodes[*]}")
state=$RUN/redis-cluster-$base

cli() {
	local port=$1
	shift
	timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@"
}

node_ok() {
	cli "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'
}

cluster_ok() {
	local p
	for p in "${ports[@]}"; do
		node_ok "$p" || return 1
	done
}

# pid_of PORT: the pid of the node this script started on PORT, if it runs.
pid_of() {
	local dir pid
	dir=$(cat "$state/dir" 2>/dev/null) || return 1
	pid=$(cat "$dir/$1/redis.pid" 2>/dev/null) || return 1
	recorded "$pid" "$dir/$1/redis.pid" && echo "$pid"
}

stop() {
	local dir p pid pids=()
	dir=$(cat "$state/dir" 2>/dev/null) || dir=
	for p in "${ports[@]}"; do
		if pid=$(pid_of "$p"); then
			pids+=("$pid")
		fi
	done
	stop_pids 10 "${pids[@]}"
	# Only ever remove a directory this script made.
	case $dir in
	*/coupon-redis-cluster-"$base".*) rm -rf -- "$dir" ;;
	esac
	rm -rf -- "$state"
}

start() {
	if cluster_ok; then
		return
	fi
	stop # whatever is left of an earlier, broken cluster
	local p
	for p in "${ports[@]}"; do
		listening "$p" && die "127.0.0.1:$p is taken by a process this script did not start"
		listening "$((p + 10000))" && die "127.0.0.1:$((p + 10000)) (cluster bus of $p) is taken"
	done

	mkdir -p "$state"
	local dir
	dir=$(mktemp -d "${TMPDIR:-/tmp}/coupon-redis-cluster-$base.XXXXXX")
	echo "$dir" >"$state/dir"
	for p in "${ports[@]}"; do
		mkdir "$dir/$p"
		redis-server --port "$p" --bind 127.0.0.1 --daemonize yes \
			--dir "$dir/$p" --pidfile "$dir/$p/redis.pid" --logfile "$dir/$p/redis.log" \
			--save "" --appendonly no \
			--cluster-enabled yes --cluster-config-file "$dir/$p/nodes.conf" \
			--cluster-node-timeout 5000 >/dev/null 9>&- ||
			fail "$dir/$p/redis.log"
	done
	for p in "${ports[@]}"; do
		wait_for 20 "redis node 127.0.0.1:$p" cli "$p" ping || fail "$dir/$p/redis.log"
	done

	redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
		>"$dir/create.log" 2>&1 || fail "$dir/create.log"
	wait_for 30 "cluster_state:ok on every node" cluster_ok || fail "$dir/create.log"
}

fail() {
	tail_log "$1"
	stop
	die "redis cluster on $addrs did not start"
}

lock "redis-cluster-$base"

case $cmd in
start)
	start
	echo "$addrs"
	;;
stop)
	stop
	;;
status)
	cluster_ok || die "redis cluster on $addrs is not running or not ok"
	echo "$addrs"
	;;
*)
	usage
	;;
esac
