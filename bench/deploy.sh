#!/usr/bin/env bash
# The agent's image write path against what people do by hand:
#   curl -s URL | zstd -d | dd of=TARGET bs=4M conv=fsync
# on the same zstd image served over loopback, written to the same target.
# The agent also hashes the download and the raw stream and reads the whole
# image back from the target to verify it, which the pipeline does not:
# the pipeline is given a second pass, sha256sum of the target, as the
# fair comparison ("pipeline+verify").
#
#   bench/deploy.sh                 # 1 GiB image onto a file in .cache
#   SIZE_MB=4096 TARGET=/dev/loop0 bench/deploy.sh
#
# SIZE_MB (default 1024) is the raw image size; half of it is random
# (incompressible), half zeroes, as real images are. RUNS (default 3).
# SMOKE=1 is a tiny run: a 16 MiB image, once, without dropping the page
# cache.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${SMOKE:-}" ] && : "${SIZE_MB:=16}" "${RUNS:=1}"
CACHE=$PWD/.cache/deploybench
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
TARGET=${TARGET:-$CACHE/target}
PORT=${PORT:-18099}
mkdir -p "$CACHE"
command -v zstd >/dev/null || { echo "installing zstd" >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y zstd >/dev/null; }
command -v curl >/dev/null || { echo "installing curl" >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y curl >/dev/null; }

IMG=$CACHE/image-$SIZE_MB.raw.zst
if [ ! -f "$IMG" ]; then
	echo "making a $SIZE_MB MiB image" >&2
	{ head -c $((SIZE_MB / 2))M /dev/urandom; head -c $((SIZE_MB - SIZE_MB / 2))M /dev/zero; } | zstd -q -T0 -3 -o "$IMG"
fi
SUM=$(sha256sum "$IMG" | cut -d' ' -f1)
go build -o "$CACHE/deploywrite" ./bench/internal/deploywrite
# Serve the image with Python's plain file server: the same for both sides.
(cd "$CACHE" && exec python3 -m http.server "$PORT" --bind 127.0.0.1 >/dev/null 2>&1) &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
for _ in $(seq 50); do curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$PORT/$(basename "$IMG")" && break; sleep 0.1; done
URL=http://127.0.0.1:$PORT/$(basename "$IMG")
[ -b "$TARGET" ] || { rm -f "$TARGET"; truncate -s $((SIZE_MB + 64))M "$TARGET"; }

drop() { [ -n "${SMOKE:-}" ] && return; sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
pipeline() { curl -s "$URL" | zstd -q -d | dd of="$TARGET" bs=4M conv=fsync,notrunc status=none; }
verify() { head -c ${SIZE_MB}M "$TARGET" | sha256sum >/dev/null; }

printf "%-22s %s\n" "run" "seconds (MB/s)"
a_total=0; p_total=0; pv_total=0
for i in $(seq "$RUNS"); do
	drop; a=$("$CACHE/deploywrite" -url "$URL" -sha256 "$SUM" -target "$TARGET" | cut -d' ' -f1)
	drop; p=$(secs pipeline)
	drop; v=$(secs verify)
	pv=$(echo "$p + $v" | bc)
	printf "agent %-16s %.2f (%.0f)\n" "#$i" "$a" "$(echo "$SIZE_MB * 1.048576 / $a" | bc -l)"
	printf "pipeline %-13s %.2f (%.0f)\n" "#$i" "$p" "$(echo "$SIZE_MB * 1.048576 / $p" | bc -l)"
	printf "pipeline+verify %-6s %.2f\n" "#$i" "$pv"
	a_total=$(echo "$a_total + $a" | bc); p_total=$(echo "$p_total + $p" | bc); pv_total=$(echo "$pv_total + $pv" | bc)
done
printf "\nagent speed / pipeline speed:          %.2f\n" "$(echo "$p_total / $a_total" | bc -l)"
printf "agent speed / (pipeline + verify):      %.2f\n" "$(echo "$pv_total / $a_total" | bc -l)"
