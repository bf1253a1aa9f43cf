#!/usr/bin/env bash
# The API under a site's load: NODES nodes enrolled through POST
# /api/v1/nodes, AGENTS of them booted as their agents boot (the node's
# iPXE script from its own 127.1.x.y address, the lookup with the boot
# secret off its kernel command line) and heartbeating, while READERS
# clients with the admin token walk the node list page by page and open
# random node pages, for DURATION. No anchor: the goal is p99 < 50 ms per
# route and no errors. Prints the result line of each of REPEATS runs
# (each on a fresh data dir) and the medians.
#
#   bench/api.sh                   # 10,000 nodes, 1,000 agents, 8 readers, 30 s, 1 repeat
#   SMOKE=1 bench/api.sh           # 200 nodes, 20 agents, 3 s
#
# The simulated nodes call from 127.0.0.0/8, which rackboot cannot tie to
# a MAC (no lease, no neighbour entry): the server is told it is a routed
# network (routed_networks), as a site with relayed racks would, so the
# boot scripts carry the boot secret. HEARTBEAT (default: the server's,
# 10 s) is --agent-heartbeat. The flood protections stay at their
# defaults. RACKBOOT (default bin/rackboot, built when missing) is the
# binary run.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
if [ -n "${SMOKE:-}" ]; then
	: "${NODES:=200}" "${AGENTS:=20}" "${READERS:=2}" "${DURATION:=3s}" "${HEARTBEAT:=1s}"
fi
NODES=${NODES:-10000}
AGENTS=${AGENTS:-1000}
READERS=${READERS:-8}
DURATION=${DURATION:-30s}
HEARTBEAT=${HEARTBEAT:-10s}
REPEATS=${REPEATS:-1}
RACKBOOT=${RACKBOOT:-bin/rackboot}

[ -x "$RACKBOOT" ] || [ "$RACKBOOT" != bin/rackboot ] || make build >/dev/null
WORK=$(mktemp -d)
PID=
cleanup() {
	[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
go build -o "$WORK/httpload" ./bench/internal/httpload

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cat >"$WORK/rackboot.yaml" <<YAML
routed_networks: [127.0.0.0/8]
YAML

echo "API on loopback: $NODES nodes, $AGENTS agents heartbeating every $HEARTBEAT, $READERS readers, $DURATION; $REPEATS repeats" >&2
lines=""
for r in $(seq "$REPEATS"); do
	DATA=$WORK/data-$r
	# The agent boot script names a kernel and an initrd: empty ones do,
	# nothing fetches them.
	mkdir -p "$DATA/artifacts/x86_64"
	touch "$DATA/artifacts/x86_64/vmlinuz" "$DATA/artifacts/x86_64/initrd"
	PORT=$(free_port)
	"$RACKBOOT" serve --config "$WORK/rackboot.yaml" --data-dir "$DATA" --dhcp-mode off --server-ip 127.0.0.1 \
		--http-addr "127.0.0.1:$PORT" --tftp-addr "127.0.0.1:$(free_port)" --agent-heartbeat "$HEARTBEAT" \
		--log-level warn >"$WORK/server.log" 2>&1 &
	PID=$!
	for _ in $(seq 100); do
		[ -s "$DATA/admin.token" ] && curl -sf -o /dev/null "http://127.0.0.1:$PORT/api/v1/openapi.json" && break
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	line=$("$WORK/httpload" -mode api -base "http://127.0.0.1:$PORT" -token-file "$DATA/admin.token" \
		-nodes "$NODES" -agents "$AGENTS" -readers "$READERS" -duration "$DURATION") ||
		{ echo "$line" >&2; tail -20 "$WORK/server.log" >&2; exit 1; }
	echo "rackboot #$r $line"
	lines+="$line"$'\n'
	kill "$PID" 2>/dev/null || true
	wait "$PID" 2>/dev/null || true
	PID=
done

echo
m=""
for k in enroll_per_s list_per_s list_p50_ms list_p99_ms node_per_s node_p50_ms node_p99_ms heartbeat_per_s heartbeat_p50_ms heartbeat_p99_ms failures; do
	m+=" $k=$(median $k <<<"$lines")"
done
echo "median$m"
