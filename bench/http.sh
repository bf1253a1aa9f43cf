#!/usr/bin/env bash
# Boot HTTP: CLIENTS parallel clients (bench/internal/httpload) each fetch
# a kernel and then an initrd of random bytes, ROUNDS times, from
# `rackboot serve` itself (its boot port, files from DATA_DIR/artifacts)
# and from nginx (nginx-light, sendfile on), one after the other on
# loopback; then the same with random Range requests. Every body is
# compared with the file. Prints each run's result line, the medians of
# REPEATS runs, and rackboot / nginx. Needs root only to install
# nginx-light with apt when missing.
#
#   bench/http.sh                  # 12 MiB kernel, 60 MiB initrd, 100 clients, 3 rounds, 3 repeats
#   KERNEL_MB=30 INITRD_MB=300 bench/http.sh
#   SMOKE=1 bench/http.sh          # tiny sizes, a few clients, one run each
#
# RACKBOOT (default bin/rackboot, built when missing) is the binary run.
# RANGES (default 20) is the number of Range requests per client, per file,
# per round, each at most RANGE_MAX bytes (1 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
if [ -n "${SMOKE:-}" ]; then
	: "${KERNEL_MB:=1}" "${INITRD_MB:=2}" "${CLIENTS:=4}" "${ROUNDS:=1}" "${REPEATS:=1}" "${RANGES:=4}"
fi
KERNEL_MB=${KERNEL_MB:-12}
INITRD_MB=${INITRD_MB:-60}
CLIENTS=${CLIENTS:-100}
ROUNDS=${ROUNDS:-3}
REPEATS=${REPEATS:-3}
RANGES=${RANGES:-20}
RANGE_MAX=${RANGE_MAX:-1048576}
RACKBOOT=${RACKBOOT:-bin/rackboot}

command -v nginx >/dev/null || { echo "installing nginx-light" >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
[ -x "$RACKBOOT" ] || [ "$RACKBOOT" != bin/rackboot ] || make build >/dev/null
WORK=$(mktemp -d)
PID=
cleanup() {
	[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
go build -o "$WORK/httpload" ./bench/internal/httpload

# nginx's workers run as nobody and rackboot keeps its data dir private:
# nginx serves WWW, world-readable, and rackboot hard links of the same
# files (one inode, one page cache) in its data dir.
WWW=$WORK/www
ART=$WWW/artifacts
mkdir -p "$ART/x86_64" "$WORK/data/artifacts/x86_64"
chmod 755 "$WORK" "$WWW" "$ART" "$ART/x86_64"
head -c "$((KERNEL_MB << 20))" /dev/urandom >"$ART/x86_64/vmlinuz"
head -c "$((INITRD_MB << 20))" /dev/urandom >"$ART/x86_64/initrd"
chmod 644 "$ART/x86_64/"*
ln "$ART/x86_64/vmlinuz" "$ART/x86_64/initrd" "$WORK/data/artifacts/x86_64/"
FILES=artifacts/x86_64/vmlinuz=$ART/x86_64/vmlinuz,artifacts/x86_64/initrd=$ART/x86_64/initrd

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
nginx_conf "$WORK/nginx" "127.0.0.1:$PORT" "$WWW" 4096

start() {
	case $1 in
	rackboot) "$RACKBOOT" serve --data-dir "$WORK/data" --dhcp-mode off --server-ip 127.0.0.1 \
		--http-addr "127.0.0.1:$PORT" --tftp-addr "127.0.0.1:$(free_port)" --log-level warn >"$WORK/server.log" 2>&1 & ;;
	nginx) nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -g 'daemon off;' >"$WORK/server.log" 2>&1 & ;;
	esac
	PID=$!
	for _ in $(seq 100); do
		curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$PORT/artifacts/x86_64/vmlinuz" && return
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$WORK/server.log" "$WORK/nginx/error.log" >&2 2>/dev/null || true
	echo "$1 did not start serving" >&2
	exit 1
}
stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; }

echo "boot HTTP on loopback: $CLIENTS clients, ${KERNEL_MB} MiB kernel + ${INITRD_MB} MiB initrd, $ROUNDS rounds; range: $RANGES x <= $RANGE_MAX B per file per round; $REPEATS repeats" >&2
declare -A runs
for server in rackboot nginx; do
	start $server
	for r in $(seq "$REPEATS"); do
		for mode in whole range; do
			ranges=0
			[ $mode = range ] && ranges=$RANGES
			line=$("$WORK/httpload" -mode files -base "http://127.0.0.1:$PORT" -files "$FILES" -c "$CLIENTS" \
				-rounds "$ROUNDS" -ranges "$ranges" -range-max "$RANGE_MAX") || { echo "$server $mode: $line" >&2; exit 1; }
			echo "$server #$r $line"
			runs[$server.$mode]+="$line"$'\n'
		done
	done
	stop
done

echo
for mode in whole range; do
	for server in rackboot nginx; do
		m=""
		for k in mbps rps p50_ms p99_ms failures; do m+=" $k=$(median $k <<<"${runs[$server.$mode]}")"; done
		echo "median $mode $server$m"
	done
	rb=$(median mbps <<<"${runs[rackboot.$mode]}")
	ng=$(median mbps <<<"${runs[nginx.$mode]}")
	awk -v a="$rb" -v b="$ng" -v m=$mode 'BEGIN { if (b > 0) printf "ratio %s rackboot/nginx=%.2f\n", m, a / b }'
done
