#!/usr/bin/env bash
# Runs the benchmarks (make bench runs it after make build): `couponlab bench
# tcc` against a coordinator with the MySQL store, then against one with the
# Redis store on a Redis of its own. Everything it starts runs on free
# loopback ports with temporary state, and is stopped and removed on exit.
#
# Environment:
#   COUPON_BENCH_TCC_ARGS  extra flags for `couponlab bench tcc`, e.g. "--duration 5s"
#   COUPON_BENCH_STORES    stores to run, default "mysql redis"
#   COUPON_BENCH_DTM_DB    MySQL store database, default coupon_bench_dtm (dropped)
#   COUPON_BENCH_BIN       where couponlab and coordinator are, default bin
#   COUPON_BENCH_CLAIM     0 skips the claim benchmark
#   COUPON_BENCH_CLAIM_ARGS extra flags for `couponlab bench claim`
#   COUPON_BENCH_EVENTS    0 skips the events benchmark
#   COUPON_BENCH_EVENTS_ARGS extra flags for `couponlab bench events`
#   COUPON_BENCH_RECONCILE 0 skips the reconcile benchmark
#   COUPON_BENCH_RECONCILE_ARGS flags for `couponlab bench reconcile`, default
#                          "--orders 10000000" (CSV; add "--source mysql" for MySQL)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

MYSQL_HOST=127.0.0.1
MYSQL_PORT=3306
DTM_DB=${COUPON_BENCH_DTM_DB:-coupon_bench_dtm}
STORES=${COUPON_BENCH_STORES:-mysql redis}
BIN=${COUPON_BENCH_BIN:-bin}
read -ra TCC_ARGS <<<"${COUPON_BENCH_TCC_ARGS:-}"
[[ $DTM_DB =~ ^[A-Za-z0-9_]{1,64}$ ]] || die "COUPON_BENCH_DTM_DB=$DTM_DB: want letters, digits or underscores"

for bin in "$BIN/couponlab" "$BIN/coordinator"; do
	[ -x "$bin" ] || die "$bin is missing; build it first (make bench does)"
done
command -v redis-server >/dev/null || die "redis-server is not installed (deploy/local/deps.sh installs it)"
MYSQL_CLI=$(command -v mariadb || command -v mysql) || die "no mariadb/mysql client (deploy/local/deps.sh installs it)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/coupon-bench.XXXXXX")
PIDS=()   # everything started and still running
DTM_GRPC= # gRPC address of the running coordinator

sql() {
	"$MYSQL_CLI" --protocol=tcp -h "$MYSQL_HOST" -P "$MYSQL_PORT" -u root -e "$1"
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if ((${#PIDS[@]})); then
		stop_pids 20 "${PIDS[@]}"
	fi
	sql "DROP DATABASE IF EXISTS \`$DTM_DB\`" 2>/dev/null || warn "could not drop database $DTM_DB"
	rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop PID: stops one process this script started.
stop() {
	stop_pids 20 "$1"
	local kept=() p
	for p in "${PIDS[@]}"; do
		[ "$p" = "$1" ] || kept+=("$p")
	done
	PIDS=("${kept[@]}")
}

# free_port: a loopback port nothing listens on right now.
free_port() {
	local port
	for _ in $(seq 100); do
		port=$((20000 + RANDOM % 30000))
		if ! listening "$port"; then
			echo "$port"
			return
		fi
	done
	die "found no free loopback port"
}

# quiet: shows what else runs; the figures are only worth keeping when the
# load is low.
quiet() {
	local cores load
	cores=$(nproc)
	load=$(cut -d' ' -f1 /proc/loadavg)
	echo "== machine: $cores cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	top -bn1 | head -15
	if awk -v l="$load" -v c="$cores" 'BEGIN { exit !(l > c / 2) }'; then
		warn "the machine is not quiet (1-minute load $load on $cores cores): the figures will be low and noisy"
	fi
	echo
}

# start_coordinator NAME VAR=VALUE...: starts bin/coordinator with the store
# settings given, waits until it answers, and sets DTM_GRPC and DTM_PID.
start_coordinator() {
	local name=$1 http grpc
	shift
	http=$(free_port)
	grpc=$(free_port)
	env "$@" \
		COUPON_COORDINATOR_HTTP_ADDR="127.0.0.1:$http" \
		COUPON_COORDINATOR_GRPC_ADDR="127.0.0.1:$grpc" \
		COUPON_COORDINATOR_LOG_LEVEL=warn \
		LOG_LEVEL=WARN \
		"$BIN/coordinator" serve </dev/null >"$TMP/$name.log" 2>&1 &
	DTM_PID=$!
	PIDS+=("$DTM_PID")
	ready() { dead "$DTM_PID" || curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$http/api/ping"; }
	if ! wait_for 60 "$name" ready || dead "$DTM_PID"; then
		tail_log "$TMP/$name.log"
		die "$name did not start"
	fi
	DTM_GRPC=127.0.0.1:$grpc
}

# bench_tcc STORE: couponlab bench tcc against the running coordinator.
bench_tcc() {
	echo "== couponlab bench tcc, $1 store (coordinator $DTM_GRPC)"
	# LOG_LEVEL=ERROR: the benchmark client counts refusals; the DTM client would log each.
	LOG_LEVEL=ERROR "$BIN/couponlab" bench tcc --dtm "$DTM_GRPC" --store "$1" \
		--mysql "root@tcp($MYSQL_HOST:$MYSQL_PORT)/" "${TCC_ARGS[@]}"
	echo
}

tcc_mysql() {
	sql "DROP DATABASE IF EXISTS \`$DTM_DB\`"
	local store=(
		COUPON_COORDINATOR_STORE_DRIVER=mysql
		COUPON_COORDINATOR_STORE_HOST="$MYSQL_HOST"
		COUPON_COORDINATOR_STORE_PORT="$MYSQL_PORT"
		COUPON_COORDINATOR_STORE_USER=root
		COUPON_COORDINATOR_STORE_PASSWORD=
		COUPON_COORDINATOR_STORE_DB="$DTM_DB"
	)
	if ! env "${store[@]}" "$BIN/coordinator" migrate >"$TMP/coordinator-migrate.log" 2>&1; then
		tail_log "$TMP/coordinator-migrate.log"
		die "bin/coordinator migrate failed"
	fi
	start_coordinator coordinator-mysql "${store[@]}"
	bench_tcc mysql
	stop "$DTM_PID"
	sql "DROP DATABASE IF EXISTS \`$DTM_DB\`"
}

# tcc_redis: DTM's Redis store gets a redis-server of its own (DTM may
# flush its Redis; the shared one on 6379 must never be).
tcc_redis() {
	local port redis_pid
	port=$(free_port)
	mkdir -p "$TMP/redis"
	redis-server --bind 127.0.0.1 --port "$port" --dir "$TMP/redis" --save "" --appendonly no \
		--daemonize no --logfile "$TMP/redis/redis.log" </dev/null >/dev/null 2>&1 &
	redis_pid=$!
	PIDS+=("$redis_pid")
	if ! wait_for 20 "redis-server on $port" redis-cli -h 127.0.0.1 -p "$port" ping; then
		tail_log "$TMP/redis/redis.log"
		die "redis-server did not start"
	fi
	start_coordinator coordinator-redis \
		COUPON_COORDINATOR_STORE_DRIVER=redis \
		COUPON_COORDINATOR_STORE_HOST=127.0.0.1 \
		COUPON_COORDINATOR_STORE_PORT="$port" \
		COUPON_COORDINATOR_STORE_REDIS_PREFIX="{coupon-bench-dtm}"
	bench_tcc redis
	stop "$DTM_PID"
	stop "$redis_pid"
}

# metrics_summary prints the service's claim and RPC counters from /metrics.
metrics_summary() {
	curl -fsS --max-time 5 http://127.0.0.1:9091/metrics 2>/dev/null |
		grep -E '^(coupon_claims_total|coupon_claim_batch_size_(count|sum)|coupon_template_cache_(hits|misses)_total|grpc_server_handled_total\{[^}]*grpc_method="(ClaimCoupon|GetTemplate|ListUserCoupons)")' |
		grep -v ' 0$' || true
}

bench_claim() {
	# Drives the local stack (make up) over gRPC with the development tokens
	# (local-admin-alice, local-admin-bob, local-app); verifies from MySQL and Redis.
	curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:9091/healthz ||
		die "coupon service not answering on 127.0.0.1:9091; run make up first"
	local claim_args=()
	read -ra claim_args <<<"${COUPON_BENCH_CLAIM_ARGS:-}"
	"$BIN/couponlab" bench claim --addr 127.0.0.1:9090 --pidfile "$RUN/coupon.pid" "${claim_args[@]}"
	echo "== /metrics of the coupon service after the claim bench (non-zero series)"
	metrics_summary
}

# bench_reconcile: generates a day of orders as CSV in $TMP, reconciles it
# and prints rows/s and peak RSS; needs no running stack.
bench_reconcile() {
	local args=()
	read -ra args <<<"${COUPON_BENCH_RECONCILE_ARGS:---orders 10000000}"
	echo "== couponlab bench reconcile ${args[*]}"
	"$BIN/couponlab" bench reconcile --dir "$TMP" "${args[@]}"
	echo
}

# bench_events: claims with events on against off, the relay draining a
# backlog, and claim-to-subscriber latency; starts its own nats-server and
# coupon services in-process, needs no running stack.
bench_events() {
	local args=()
	read -ra args <<<"${COUPON_BENCH_EVENTS_ARGS:-}"
	echo "== couponlab bench events ${args[*]}"
	"$BIN/couponlab" bench events --mysql "root@tcp($MYSQL_HOST:$MYSQL_PORT)/" --redis 127.0.0.1:6379 "${args[@]}"
	echo
}

quiet
for store in $STORES; do
	case $store in
	mysql) tcc_mysql ;;
	redis) tcc_redis ;;
	*) die "COUPON_BENCH_STORES: unknown store $store (mysql or redis)" ;;
	esac
done
if [ "${COUPON_BENCH_CLAIM:-1}" != 0 ]; then
	bench_claim
fi
if [ "${COUPON_BENCH_EVENTS:-1}" != 0 ]; then
	bench_events
fi
if [ "${COUPON_BENCH_RECONCILE:-1}" != 0 ]; then
	bench_reconcile
fi
