#!/usr/bin/env bash
# TFTP throughput on loopback, as a matrix: atftp fetches one file at each
# blksize of BLKSIZES and windowsize of WINDOWS from rackboot serve (the
# file is one of its artifacts, as a kernel that GRUB fetches over TFTP
# is), from atftpd (which negotiates windowsize) and, at windowsize 1, from
# tftpd-hpa (in.tftpd, which does not); it prints MB/s per run and, at
# each point, rackboot's ratio to the better anchor.
#
#   bench/tftp.sh                     # 100 MiB, blksize 512 1468 8192 x windowsize 1 8 32 64
#   BLKSIZES=1468 WINDOWS="1 32" bench/tftp.sh
#   RACKBOOT=/path/to/rackboot bench/tftp.sh
#   RACKBOOT_TFTP_CMD='"$TFTPSERVE" -root "$ROOT" -addr 127.0.0.1:$PORT' bench/tftp.sh
#                                     # another server instead of rackboot serve
#
# RACKBOOT_TFTP_CMD (or the first argument) is a shell command that serves
# the directory $ROOT over TFTP on 127.0.0.1:$PORT in the foreground; both
# variables are exported to it, and TFTPSERVE is the package's own test
# server (tftp/internal/tftpserve). By default it is rackboot serve with
# DHCP off. SIZE_MB (default 100) and REPEAT (1) tune the runs; SMOKE=1
# makes it a tiny run (1 MiB, blksize 1468, windowsizes 1 and 32). Needs
# root only to install packages: atftp and tftpd-hpa with apt-get, atftpd
# extracted into .cache/tftpbench (its package conflicts with tftpd-hpa's).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
[ -n "${SMOKE:-}" ] && : "${SIZE_MB:=1}" "${BLKSIZES:=1468}" "${WINDOWS:=1 32}"
CACHE=$REPO/.cache/tftpbench
SIZE_MB=${SIZE_MB:-100}
BLKSIZES=${BLKSIZES:-"512 1468 8192"}
WINDOWS=${WINDOWS:-"1 8 32 64"}
REPEAT=${REPEAT:-1}
RACKBOOT=${RACKBOOT:-bin/rackboot}
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
go build -o "$CACHE/tftpserve" ./tftp/internal/tftpserve
export TFTPSERVE=$CACHE/tftpserve
# What rackboot serves: its artifacts/ tree is ROOT.
REMOTE=bench.bin
if [ -z "$RACKBOOT_TFTP_CMD" ]; then
	[ -x "$RACKBOOT" ] || [ "$RACKBOOT" != bin/rackboot ] || make build >/dev/null
	export RACKBOOT
	RACKBOOT_TFTP_CMD='"$RACKBOOT" serve --data-dir "$DATA" --dhcp-mode off --server-ip 127.0.0.1 --tftp-addr 127.0.0.1:$PORT --http-addr 127.0.0.1:$HTTP_PORT --log-level warn'
	RB_REMOTE=artifacts/bench.bin
fi
WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
export DATA=$WORK/data
export ROOT=$DATA/artifacts
mkdir -p "$ROOT"
# tftpd-hpa and atftpd drop privileges: the tree must be world-readable.
chmod 755 "$WORK" "$DATA" "$ROOT"
head -c "$((SIZE_MB << 20))" /dev/urandom >"$ROOT/bench.bin"
chmod 644 "$ROOT/bench.bin"
WANT=$(sha256sum <"$ROOT/bench.bin" | cut -d' ' -f1)

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start() { # shell command, with $ROOT and $PORT set
	export PORT HTTP_PORT
	PORT=$(free_port)
	HTTP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	bash -c "exec $1" >"$WORK/server.log" 2>&1 &
	SERVER_PID=$!
	sleep 2
	kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; echo "server did not start: $1" >&2; exit 1; }
}
stop() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }

fetch() { # label, remote path, atftp options...; prints MB/s
	local label=$1 remote=$2
	shift 2
	rm -f "$WORK/got.bin"
	local t0 t1
	t0=$(date +%s.%N)
	atftp "$@" -g -r "$remote" -l "$WORK/got.bin" 127.0.0.1 "$PORT" >"$WORK/client.log" 2>&1 || true
	t1=$(date +%s.%N)
	if [ "$(sha256sum <"$WORK/got.bin" 2>/dev/null | cut -d' ' -f1)" != "$WANT" ]; then
		cat "$WORK/client.log" >&2
		echo "$label: transfer failed or corrupt" >&2
		echo 0
		return
	fi
	awk -v mb="$SIZE_MB" -v a="$t0" -v b="$t1" -v l="$label" \
		'BEGIN { r = mb * 1.048576 / (b - a); printf "%-44s %7.2f s %8.1f MB/s\n", l, b - a, r > "/dev/stderr"; printf "%.1f\n", r }'
}

echo "atftp fetching ${SIZE_MB} MiB over loopback; blksize $BLKSIZES x windowsize $WINDOWS; $REPEAT runs" >&2
declare -A MBS
# run SERVER-LABEL START-COMMAND REMOTE: every point of the matrix the
# server takes, REPEAT times.
run() {
	local name=$1 cmd=$2 remote=$3 b w i opts
	start "$cmd"
	for b in $BLKSIZES; do
		for w in $WINDOWS; do
			[ "$name" = tftpd-hpa ] && [ "$w" != 1 ] && continue
			opts=(--option "blksize $b")
			[ "$name" = tftpd-hpa ] || opts+=(--option "windowsize $w")
			for i in $(seq "$REPEAT"); do
				MBS[$name,$b,$w]+="$(fetch "$(printf 'blksize %-5s windowsize %-3s %s' "$b" "$w" "$name")" "$remote" "${opts[@]}") "
			done
		done
	done
	stop
}
run tftpd-hpa "in.tftpd -L -s \"\$ROOT\" -a 127.0.0.1:\$PORT" "$REMOTE"
run atftpd "$ATFTPD --daemon --no-fork --port \$PORT --bind-address 127.0.0.1 --user nobody --group nogroup --logfile /dev/null --maxthread 100 \"\$ROOT\"" "$REMOTE"
run rackboot "$RACKBOOT_TFTP_CMD" "${RB_REMOTE:-$REMOTE}"

med() { tr ' ' '\n' | { grep . || true; } | sort -g | awk '{ v[++n] = $1 } END { if (!n) print 0; else print (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }'; }
echo >&2
printf '%-8s %-10s %10s %10s %10s   %s\n' blksize windowsize rackboot atftpd tftpd-hpa 'rackboot / the better anchor' >&2
for b in $BLKSIZES; do
	for w in $WINDOWS; do
		rb=$(med <<<"${MBS[rackboot,$b,$w]:-}")
		at=$(med <<<"${MBS[atftpd,$b,$w]:-}")
		hpa=$(med <<<"${MBS[tftpd-hpa,$b,$w]:-}")
		best=$(awk -v a="$at" -v h="$hpa" 'BEGIN { print (a > h) ? a : h }')
		ratio=$(awk -v r="$rb" -v b="$best" 'BEGIN { if (b > 0 && r > 0) printf "%.2f", r / b; else print "n/a" }')
		[ "$w" = 1 ] || hpa=-
		printf '%-8s %-10s %10s %10s %10s   %s\n' "$b" "$w" "$rb" "$at" "$hpa" "$ratio" >&2
	done
done
