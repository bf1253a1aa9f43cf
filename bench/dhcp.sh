#!/usr/bin/env bash
# DHCP throughput: perfdhcp (Kea's load generator) drives full DORA exchanges
# through a relay address against rackboot (authoritative, SQLite leases),
# Kea (memfile) and dnsmasq, one at a time, each in a network namespace
# joined to perfdhcp's by a veth pair. Prints the 4-way exchanges per second
# each sustained at the offered rate, the drops, and rackboot's ratio to the
# others. Needs root; installs kea-dhcp4-server, kea-admin (perfdhcp) and
# dnsmasq-base with apt when missing.
#
#   bench/dhcp.sh                 # RATE=2000 offered DORA/s, PERIOD=15 s, CLIENTS=50000
#   SMOKE=1 RACKBOOT=/tmp/rackboot bench/dhcp.sh   # a tiny run of the binary given
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${SMOKE:-}" ] && : "${RATE:=200}" "${PERIOD:=3}" "${CLIENTS:=1000}"
RACKBOOT=${RACKBOOT:-bin/rackboot}
RATE=${RATE:-2000}
PERIOD=${PERIOD:-15}
CLIENTS=${CLIENTS:-50000}
S=rbbench-s C=rbbench-c
WORK=$(mktemp -d)

for p in perfdhcp:kea-admin kea-dhcp4:kea-dhcp4-server dnsmasq:dnsmasq-base; do
	command -v "${p%%:*}" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${p#*:}" >/dev/null
done
[ -x "$RACKBOOT" ] || [ "$RACKBOOT" != bin/rackboot ] || make build >/dev/null

cleanup() {
	[ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	ip netns del $S 2>/dev/null || true
	ip netns del $C 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
ip netns del $S 2>/dev/null || true
ip netns del $C 2>/dev/null || true
ip netns add $S
ip netns add $C
ip -n $S link add s0 type veth peer name c0 netns $C
ip -n $S addr add 10.66.0.1/16 dev s0
ip -n $C addr add 10.66.0.2/16 dev c0
for ns in $S $C; do ip -n $ns link set lo up; done
ip -n $S link set s0 up
ip -n $C link set c0 up

cat > "$WORK/kea.json" <<JSON
{"Dhcp4": {"interfaces-config": {"interfaces": ["s0"]},
  "lease-database": {"type": "memfile", "persist": false},
  "valid-lifetime": 3600,
  "subnet4": [{"id": 1, "subnet": "10.66.0.0/16", "pools": [{"pool": "10.66.1.0 - 10.66.255.254"}]}]}}
JSON
mkdir -p /run/kea
# perfdhcp sends as a relay (giaddr 10.66.0.2): rackboot drops relayed
# requests from senders its subnet does not list.
printf 'dhcp:\n  subnets:\n    - {prefix: 10.66.0.0/16, range: 10.66.1.0-10.66.255.254, relays: [10.66.0.2]}\n' >"$WORK/rackboot.yaml"

start() {
	case $1 in
	rackboot) ip netns exec $S "$RACKBOOT" serve --data-dir "$WORK/rackboot" --interface s0 --dhcp-mode authoritative \
		--config "$WORK/rackboot.yaml" --http-addr 10.66.0.1:8080 --log-level warn >"$WORK/server.log" 2>&1 & ;;
	kea) ip netns exec $S kea-dhcp4 -c "$WORK/kea.json" >"$WORK/server.log" 2>&1 & ;;
	dnsmasq) ip netns exec $S dnsmasq --no-daemon --port=0 --interface=s0 --bind-interfaces --no-ping --quiet-dhcp \
		--dhcp-range=10.66.1.0,10.66.255.254,1h --dhcp-leasefile="$WORK/dnsmasq.leases" --conf-file=/dev/null \
		--dhcp-lease-max=200000 >"$WORK/server.log" 2>&1 & ;;
	esac
	PID=$!
	sleep 2
}

declare -A rate drops
for server in rackboot kea dnsmasq; do
	rm -rf "$WORK/rackboot" "$WORK/dnsmasq.leases"
	start $server
	ip netns exec $C perfdhcp -4 -l c0 -r "$RATE" -R "$CLIENTS" -p "$PERIOD" 10.66.0.1 >"$WORK/perf.out" 2>&1 || true
	kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true
	PID=
	rate[$server]=$(awk '/^Rate:/ {print $2; exit}' "$WORK/perf.out")
	drops[$server]=$(awk '/drops ratio/ {printf "%s%s ", $3, $4}' "$WORK/perf.out")
	printf '%-9s %10s DORA/s   drops (discover, request): %s\n' "$server" "${rate[$server]:-?}" "${drops[$server]:-?}"
done
for other in kea dnsmasq; do
	awk -v a="${rate[rackboot]:-0}" -v b="${rate[$other]:-0}" -v o=$other \
		'BEGIN { if (b > 0) printf "rackboot / %s: %.2f\n", o, a / b }'
done
