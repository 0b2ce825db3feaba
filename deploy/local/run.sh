#!/usr/bin/env bash
# make run: the whole local stack with a demo. Starts MariaDB and Redis if
# needed (installing them on a fresh Debian machine), migrates, starts the
# coordinator, the coupon service and the sample shop, runs the scripted
# demo, then follows the service logs in the foreground until Ctrl-C, which
# stops everything it started. Without a terminal it stops after the demo.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

"$ROOT/deploy/local/up.sh"
trap '"$ROOT/deploy/local/down.sh"' EXIT
trap 'exit 0' INT TERM

echo
bin/couponlab demo --addr 127.0.0.1:9090 --shop 127.0.0.1:9190
echo
echo "The stack is up: coupon gRPC 127.0.0.1:9090 (ops http://127.0.0.1:9091), shop 127.0.0.1:9190,"
echo "DTM coordinator 127.0.0.1:36790 (http 36789). Try: grpcurl -plaintext 127.0.0.1:9090 list"
echo "HTTP/JSON API and the operator console: http://127.0.0.1:9092/console (sign in with local-admin-alice)"
echo "Calls need a development token, e.g. grpcurl -plaintext -H 'authorization: Bearer local-admin-alice' 127.0.0.1:9090 coupon.v1.AdminService/ListCampaigns"
echo "Lifecycle events on NATS 127.0.0.1:4223, stream COUPON_EVENTS: go run ./examples/events (docs/events.md)"
echo "Metrics: curl 127.0.0.1:9091/metrics (dashboard deploy/grafana/coupon.json, alerts deploy/prometheus/alerts.yml)"
if [ -t 0 ] && [ -z "${CI:-}" ]; then
	echo "Following the service logs; Ctrl-C stops the stack."
	tail -n 0 -F "$RUN/coupon.log" "$RUN/coordinator.log" "$RUN/shop.log" 2>/dev/null &
	wait $! || true
fi
