#!/usr/bin/env bash
# DHCP throughput: perfdhcp (Kea's load generator) drives full DORA exchanges
# through a relay address against rackboot (authoritative, SQLite leases,
# each ACKed lease fsynced before its ACK leaves), Kea with memfile leases
# persisted (persist: true, the anchor: it appends each lease to its file),
# Kea with persist: false (keeps nothing) and dnsmasq, one at a time, each in
# a network namespace joined to perfdhcp's by a veth pair. Every server is
# run REPEAT times at each offered rate of RATES; it prints each run, then
# the median exchanges per second and drops per server and rate, and
# rackboot's ratio to each other server. Needs root; installs
# kea-dhcp4-server, kea-admin (perfdhcp) and dnsmasq-base with apt when
# missing.
#
# perfdhcp's clients are all new to rackboot: the benchmark lifts the limit on
# unknown clients (dhcp.unknown_rate: -1), as a site expecting that many new
# machines a second would.
#
#   bench/dhcp.sh          # RATES="1000 3000" REPEAT=3 PERIOD=10 CLIENTS=50000
#   RATES="4000 8000" SERVERS="rackboot kea-persist" bench/dhcp.sh
#   RACKBOOT=/path/to/other/rackboot bench/dhcp.sh   # another build, same rig
#   BASELINE=/path/to/old/rackboot SERVERS="rackboot baseline kea-persist" bench/dhcp.sh
#                          # an older build as one more server, runs interleaved
#   SMOKE=1 RACKBOOT=/tmp/rackboot bench/dhcp.sh   # a tiny run of the binary given
#   SERVERS="rackboot-pg kea-pg" bench/dhcp.sh      # both on PostgreSQL
#   BASELINE=/path/to/old/rackboot SERVERS="rackboot-pg baseline-pg kea-pg" bench/dhcp.sh
#
# rackboot-pg and kea-pg keep their leases in PostgreSQL (a fresh database
# each run) on a cluster scripts/postgres.sh starts with PostgreSQL's own
# durability (fsync and synchronous commit on), reached over its unix
# socket: rackboot with --db, Kea with its postgresql lease backend.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${SMOKE:-}" ] && : "${RATES:=200}" "${REPEAT:=1}" "${PERIOD:=3}" "${CLIENTS:=1000}"
RATES=${RATES:-1000 3000}
REPEAT=${REPEAT:-3}
PERIOD=${PERIOD:-10}
CLIENTS=${CLIENTS:-50000}
SERVERS=${SERVERS:-rackboot kea-persist kea dnsmasq}
RACKBOOT=${RACKBOOT:-bin/rackboot}
S=rbbench-s C=rbbench-c
WORK=$(mktemp -d)

for p in perfdhcp:kea-admin kea-dhcp4:kea-dhcp4-server dnsmasq:dnsmasq-base; do
	command -v "${p%%:*}" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${p#*:}" >/dev/null
done
[ -x "$RACKBOOT" ] || [ "$RACKBOOT" != bin/rackboot ] || make build >/dev/null

cleanup() {
	[ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	[ -z "${PGDSN:-}" ] || scripts/postgres.sh stop "$PGDIR" 2>/dev/null || true
	ip netns del $S 2>/dev/null || true
	ip netns del $C 2>/dev/null || true
	[ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
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

for persist in false true; do
	cat > "$WORK/kea-$persist.json" <<JSON
{"Dhcp4": {"interfaces-config": {"interfaces": ["s0"]},
  "lease-database": {"type": "memfile", "persist": $persist, "name": "$WORK/kea-leases.csv", "lfc-interval": 0},
  "valid-lifetime": 3600,
  "subnet4": [{"id": 1, "subnet": "10.66.0.0/16", "pools": [{"pool": "10.66.1.0 - 10.66.255.254"}]}]}}
JSON
done
# perfdhcp is the relay (giaddr 10.66.0.2) of the subnet it asks for.
cat > "$WORK/rackboot.yaml" <<YAML
dhcp:
  unknown_rate: -1
  subnets:
    - prefix: 10.66.0.0/16
      range: 10.66.1.0-10.66.255.254
      relays: [10.66.0.2/32]
YAML
mkdir -p /run/kea

# Outside WORK, which only root may enter: the server runs as postgres.
PGDIR=/tmp/rackboot-postgres-bench
if [[ " $SERVERS " == *-pg" "* ]]; then
	command -v psql >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null
	PGDSN=$(POSTGRES_DURABLE=1 scripts/postgres.sh start "$PGDIR")
	PGPORT=$(cat "$PGDIR/port")
	cat >"$WORK/kea-pg.json" <<JSON
{"Dhcp4": {"interfaces-config": {"interfaces": ["s0"]},
  "lease-database": {"type": "postgresql", "name": "keabench", "host": "$PGDIR", "port": $PGPORT, "user": "postgres"},
  "valid-lifetime": 3600,
  "subnet4": [{"id": 1, "subnet": "10.66.0.0/16", "pools": [{"pool": "10.66.1.0 - 10.66.255.254"}]}]}}
JSON
fi
# fresh_db NAME drops and creates a database on the benchmark's cluster.
fresh_db() {
	psql "$PGDSN" -qX -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
}

start() {
	case $1 in
	rackboot | baseline)
		bin=$RACKBOOT
		[ "$1" = baseline ] && bin=$BASELINE
		ip netns exec $S "$bin" serve --config "$WORK/rackboot.yaml" --data-dir "$WORK/rackboot" --interface s0 \
		--dhcp-mode authoritative --http-addr 10.66.0.1:8080 --log-level warn >"$WORK/server.log" 2>&1 & ;;
	rackboot-pg | baseline-pg)
		bin=$RACKBOOT
		[ "$1" = baseline-pg ] && bin=$BASELINE
		fresh_db rbbench
		ip netns exec $S "$bin" serve --config "$WORK/rackboot.yaml" --data-dir "$WORK/rackboot" --interface s0 \
		--db "${PGDSN/\/postgres\?//rbbench?}" --dhcp-mode authoritative --http-addr 10.66.0.1:8080 --log-level warn >"$WORK/server.log" 2>&1 & ;;
	kea-pg)
		fresh_db keabench
		kea-admin db-init pgsql -n keabench -u postgres -h "$PGDIR" -P "$PGPORT" >"$WORK/kea-admin.log" 2>&1 ||
			{ cat "$WORK/kea-admin.log" >&2; exit 1; }
		ip netns exec $S kea-dhcp4 -c "$WORK/kea-pg.json" >"$WORK/server.log" 2>&1 & ;;
	kea) ip netns exec $S kea-dhcp4 -c "$WORK/kea-false.json" >"$WORK/server.log" 2>&1 & ;;
	kea-persist) ip netns exec $S kea-dhcp4 -c "$WORK/kea-true.json" >"$WORK/server.log" 2>&1 & ;;
	dnsmasq) ip netns exec $S dnsmasq --no-daemon --port=0 --interface=s0 --bind-interfaces --no-ping --quiet-dhcp \
		--dhcp-range=10.66.1.0,10.66.255.254,1h --dhcp-leasefile="$WORK/dnsmasq.leases" --conf-file=/dev/null \
		--dhcp-lease-max=200000 >"$WORK/server.log" 2>&1 & ;;
	esac
	PID=$!
	sleep 2
}

median() { sort -n | awk '{v[NR] = $1} END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

declare -A runs lost med
for rate in $RATES; do
	for i in $(seq "$REPEAT"); do
		for server in $SERVERS; do
			rm -rf "$WORK/rackboot" "$WORK/dnsmasq.leases" "$WORK"/kea-leases.csv*
			start $server
			ip netns exec $C perfdhcp -4 -l c0 -r "$rate" -R "$CLIENTS" -p "$PERIOD" 10.66.0.1 >"$WORK/perf.out" 2>&1 || true
			kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true
			PID=
			got=$(awk '/^Rate:/ {print $2; exit}' "$WORK/perf.out")
			# perfdhcp prints the drops of the DISCOVER-OFFER and the
			# REQUEST-ACK exchange; a DORA is lost if either is.
			drop=$(awk '/drops ratio/ {gsub(/%/, "", $3); s += $3} END {print s + 0}' "$WORK/perf.out")
			printf 'rate %6s run %s %-12s %10s DORA/s   drops %s%%\n' "$rate" "$i" "$server" "${got:-0}" "$drop"
			runs[$server,$rate]+="${got:-0} "
			lost[$server,$rate]+="$drop "
		done
	done
done
echo
printf '%-8s %-12s %12s %10s\n' offered server 'median DORA/s' 'drops %'
for rate in $RATES; do
	for server in $SERVERS; do
		med[$server]=$(tr ' ' '\n' <<<"${runs[$server,$rate]}" | grep . | median)
		printf '%-8s %-12s %12s %10s\n' "$rate" "$server" "${med[$server]}" "$(tr ' ' '\n' <<<"${lost[$server,$rate]}" | grep . | median)"
	done
	if [[ " $SERVERS " == *" rackboot-pg "* && " $SERVERS " == *" kea-pg "* ]]; then
		awk -v a="${med[rackboot-pg]:-0}" -v b="${med[kea-pg]:-0}" -v r="$rate" \
			'BEGIN { if (b > 0) printf "%-8s rackboot-pg / kea-pg: %.2f\n", r, a / b }'
	fi
	if [[ " $SERVERS " == *" rackboot-pg "* && " $SERVERS " == *" baseline-pg "* ]]; then
		awk -v a="${med[rackboot-pg]:-0}" -v b="${med[baseline-pg]:-0}" -v r="$rate" \
			'BEGIN { if (b > 0) printf "%-8s rackboot-pg / baseline-pg: %.2f\n", r, a / b }'
	fi
	[[ " $SERVERS " == *" rackboot "* ]] || continue
	for other in $SERVERS; do
		[ "$other" = rackboot ] && continue
		awk -v a="${med[rackboot]:-0}" -v b="${med[$other]:-0}" -v o="$other" -v r="$rate" \
			'BEGIN { if (b > 0) printf "%-8s rackboot / %s: %.2f\n", r, o, a / b }'
	done
done
