#!/usr/bin/env bash
# Starts the local stack (make up runs it once bin/ is built): MariaDB and
# Redis through deps.sh, migrations, then each service below in the
# background, returning once every one answers its health URL. A service whose
# recorded pid still runs is left alone, unless its binary was rebuilt since it
# started (make bench after a change must not measure the old build): that one
# is stopped and started again. Logs and pids: .run/NAME.log, .run/NAME.pid.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

# The stack's own NATS with JetStream (the coupon service publishes its
# events there), on ports of its own with its store under .run/.
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)

# NAME|COMMAND|HEALTH URL, started in this order, each once the one before answers.
services=(
	"nats|$nats_bin -a 127.0.0.1 -p 4223 -m 8223 -js -sd $RUN/nats|http://127.0.0.1:8223/healthz"
	"coordinator|bin/coordinator --config deploy/local/coordinator.yaml|http://127.0.0.1:36789/api/dtmsvr/newGid"
	"coupon|bin/coupon serve --config deploy/local/coupon.yaml|http://127.0.0.1:9091/healthz"
)
if [ -x bin/shop ]; then
	services+=("shop|bin/shop serve --config deploy/local/shop.yaml|http://127.0.0.1:9191/healthz")
fi
wait_secs=${COUPON_UP_TIMEOUT:-60}

healthy() {
	curl -fsS --max-time 2 -o /dev/null "$1" 2>/dev/null
}

# run_logged LOG CMD...: runs CMD with its output in LOG, shown only on failure.
run_logged() {
	local log=$1
	shift
	if ! "$@" >"$log" 2>&1; then
		tail_log "$log"
		return 1
	fi
}

migrate() {
	run_logged "$RUN/coupon-migrate.log" timeout 300 bin/coupon migrate --config deploy/local/coupon.yaml ||
		die "bin/coupon migrate failed"
	# The coordinator may not have a migrate command; its --help says. A failed
	# coordinator migration shows up below as a coordinator that stays unhealthy.
	if [ -x bin/shop ]; then
		run_logged "$RUN/shop-migrate.log" timeout 300 bin/shop migrate --config deploy/local/shop.yaml ||
			die "bin/shop migrate failed"
	fi
	local help
	help=$(timeout 10 bin/coordinator --help 2>&1) || true
	if grep -qw migrate <<<"$help"; then
		run_logged "$RUN/coordinator-migrate.log" timeout 300 bin/coordinator migrate --config deploy/local/coordinator.yaml ||
			warn "bin/coordinator migrate failed; starting the coordinator anyway"
	fi
}

# start NAME COMMAND URL
start() {
	local name=$1 url=$3 cmd pid
	local pidfile=$RUN/$name.pid log=$RUN/$name.log
	read -ra cmd <<<"$2"
	pid=$(cat "$pidfile" 2>/dev/null) || pid=
	# /proc/PID/exe is the build the process runs, even after go build replaced the file.
	if recorded "$pid" "$pidfile" && ! cmp -s "/proc/$pid/exe" "${cmd[0]}"; then
		echo "$PROG: ${cmd[0]} was rebuilt since $name (pid $pid) started; restarting it"
		stop_pids 20 "$pid"
	fi
	if ! recorded "$pid" "$pidfile"; then
		if healthy "$url"; then
			die "$url already answers, from a $name that up.sh did not start; stop it first"
		fi
		printf '=== %s up.sh: %s\n' "$(date -Is)" "$2" >>"$log"
		# setsid: a Ctrl-C in the terminal that ran make up must not reach the service.
		setsid "${cmd[@]}" </dev/null >>"$log" 2>&1 &
		pid=$!
		echo "$pid" >"$pidfile"
	fi
	ready() { dead "$pid" || healthy "$url"; }
	if ! wait_for "$wait_secs" "$name at $url" ready; then
		tail_log "$log"
		die "$name (pid $pid) did not answer $url within ${wait_secs}s"
	fi
	if dead "$pid"; then
		tail_log "$log"
		die "$name exited (log $log)"
	fi
}

for bin in bin/coupon bin/coordinator; do
	[ -x "$bin" ] || die "$bin is missing; build it first (make up does)"
done
"$ROOT/deploy/local/deps.sh"
mkdir -p "$RUN"
migrate
for svc in "${services[@]}"; do
	IFS='|' read -r name command url <<<"$svc"
	start "$name" "$command" "$url"
done
