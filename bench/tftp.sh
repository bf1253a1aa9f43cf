#!/usr/bin/env bash
# TFTP throughput on loopback: atftp fetches one file from rackboot's TFTP
# server, from tftpd-hpa (in.tftpd, no windowsize) and from atftpd (with
# windowsize), and prints MB/s per run and the ratio to tftpd-hpa.
#
#   bench/tftp.sh                     # rackboot via tftp/internal/tftpserve
#   RACKBOOT_TFTP_CMD='bin/rackboot serve ...' bench/tftp.sh
#
# RACKBOOT_TFTP_CMD (or the first argument) is a shell command that serves
# the directory $ROOT over TFTP on 127.0.0.1:$PORT in the foreground; both
# variables are exported to it. SIZE_MB (default 100), BLKSIZE (1468),
# WINDOWS (rackboot's windowsizes, "1 16 32 64") and ATFTPD_WINDOW (32) tune
# the runs; SMOKE=1 makes it a tiny run (1 MiB, windowsizes 1 and 32).
# Needs root only to install packages: atftp and tftpd-hpa with
# apt-get, atftpd extracted into .cache/tftpbench (its package conflicts
# with tftpd-hpa's).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
[ -n "${SMOKE:-}" ] && : "${SIZE_MB:=1}" "${WINDOWS:=1 32}"
CACHE=$REPO/.cache/tftpbench
SIZE_MB=${SIZE_MB:-100}
BLKSIZE=${BLKSIZE:-1468}
WINDOWS=${WINDOWS:-"1 16 32 64"}
ATFTPD_WINDOW=${ATFTPD_WINDOW:-32}
RACKBOOT_TFTP_CMD=${1:-${RACKBOOT_TFTP_CMD:-}}
mkdir -p "$CACHE"

need_pkg() { # program package
	command -v "$1" >/dev/null && return
	echo "installing $2 for $1" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null
}
need_pkg atftp atftp
need_pkg in.tftpd tftpd-hpa
ATFTPD=$CACHE/atftpd/usr/sbin/atftpd
if [ ! -x "$ATFTPD" ]; then
	(cd "$CACHE" && apt-get download atftpd >/dev/null 2>&1 && dpkg-deb -x atftpd_*.deb atftpd && rm -f atftpd_*.deb)
fi
if [ -z "$RACKBOOT_TFTP_CMD" ]; then
	go build -o "$CACHE/tftpserve" ./tftp/internal/tftpserve
	RACKBOOT_TFTP_CMD='"$TFTPSERVE" -root "$ROOT" -addr 127.0.0.1:$PORT'
	export TFTPSERVE=$CACHE/tftpserve
fi

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
export ROOT=$WORK/root
mkdir -p "$ROOT"
# tftpd-hpa and atftpd drop privileges: the tree must be world-readable.
chmod 755 "$WORK" "$ROOT"
head -c "$((SIZE_MB << 20))" /dev/urandom >"$ROOT/bench.bin"
chmod 644 "$ROOT/bench.bin"
WANT=$(sha256sum <"$ROOT/bench.bin" | cut -d' ' -f1)

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start() { # shell command, with $ROOT and $PORT set
	export PORT
	PORT=$(free_port)
	bash -c "exec $1" >"$WORK/server.log" 2>&1 &
	SERVER_PID=$!
	sleep 1
	kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; echo "server did not start: $1" >&2; exit 1; }
}
stop() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }

fetch() { # label, atftp options...; prints MB/s
	local label=$1
	shift
	rm -f "$WORK/got.bin"
	local t0 t1
	t0=$(date +%s.%N)
	atftp "$@" -g -r bench.bin -l "$WORK/got.bin" 127.0.0.1 "$PORT" >"$WORK/client.log" 2>&1 || true
	t1=$(date +%s.%N)
	if [ "$(sha256sum <"$WORK/got.bin" 2>/dev/null | cut -d' ' -f1)" != "$WANT" ]; then
		cat "$WORK/client.log" >&2
		echo "$label: transfer failed or corrupt" >&2
		echo 0
		return
	fi
	awk -v mb="$SIZE_MB" -v a="$t0" -v b="$t1" -v l="$label" \
		'BEGIN { r = mb * 1.048576 / (b - a); printf "%-34s %7.2f s %8.1f MB/s\n", l, b - a, r > "/dev/stderr"; printf "%.1f\n", r }'
}

echo "atftp fetching ${SIZE_MB} MiB over loopback, blksize $BLKSIZE" >&2
start "in.tftpd -L -s \"\$ROOT\" -a 127.0.0.1:\$PORT"
HPA=$(fetch "tftpd-hpa (no windowsize)" --option "blksize $BLKSIZE")
stop
start "$ATFTPD --daemon --no-fork --port \$PORT --bind-address 127.0.0.1 --user nobody --group nogroup --logfile /dev/null \"\$ROOT\""
ATF=$(fetch "atftpd windowsize $ATFTPD_WINDOW" --option "blksize $BLKSIZE" --option "windowsize $ATFTPD_WINDOW")
stop
start "$RACKBOOT_TFTP_CMD"
declare -A RB
for w in $WINDOWS; do
	RB[$w]=$(fetch "rackboot windowsize $w" --option "blksize $BLKSIZE" --option "windowsize $w")
done
stop

echo >&2
echo "ratio to tftpd-hpa:" >&2
ratio() { awk -v a="$1" -v b="$HPA" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "n/a" }'; }
printf '  %-30s %s\n' "atftpd windowsize $ATFTPD_WINDOW" "$(ratio "$ATF")" >&2
for w in $WINDOWS; do
	printf '  %-30s %s\n' "rackboot windowsize $w" "$(ratio "${RB[$w]}")" >&2
done
