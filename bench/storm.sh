#!/usr/bin/env bash
# Boot storm: NODES simulated UEFI x86-64 servers power on within a
# second of each other, as a rack does after a power cut, and boot
# through a relay (bench/internal/storm): DHCP, the iPXE loader over
# TFTP from each node's own leased address, DHCP again as iPXE, the boot
# scripts, kernel and initrd over HTTP, and, from rackboot, the agent's
# lookup with the boot secret off its kernel command line and its
# heartbeats. The anchor is dnsmasq (DHCP and TFTP) with nginx serving a
# boot script and the same files; its nodes stop after the initrd (the
# agent calls have no anchor). Prints each run, then the medians and
# rackboot's ratio of the time until the last node had its boot files. Needs root; installs
# dnsmasq-base and nginx-light with apt when missing.
#
#   bench/storm.sh                      # NODES="100 500 1000" REPEAT=3, new nodes
#   KINDS="new known" bench/storm.sh    # also nodes enrolled ahead through the API
#   SERVERS=rackboot NODES=1000 bench/storm.sh
#   SMOKE=1 RACKBOOT=/tmp/rackboot bench/storm.sh   # a tiny run of the binary given
#
# Sizes: LOADER_KB (default 1024, the loader over TFTP), KERNEL_MB (8) and
# INITRD_MB (32), random bytes. The nodes are new to rackboot: the
# benchmark lifts the limit on unknown clients (dhcp.unknown_rate: -1), as
# a site expecting a hall of new machines would, and dnsmasq may serve
# 2,000 TFTP transfers at once (--tftp-max; its default is 50). RACKBOOT
# (default bin/rackboot, built when missing) is the binary run.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
[ -n "${SMOKE:-}" ] && : "${NODES:=10}" "${REPEAT:=1}" "${LOADER_KB:=64}" "${KERNEL_MB:=1}" "${INITRD_MB:=1}" "${KINDS:=new known}"
NODES=${NODES:-100 500 1000}
KINDS=${KINDS:-new}
REPEAT=${REPEAT:-3}
LOADER_KB=${LOADER_KB:-1024}
KERNEL_MB=${KERNEL_MB:-8}
INITRD_MB=${INITRD_MB:-32}
SERVERS=${SERVERS:-rackboot anchor}
RACKBOOT=${RACKBOOT:-bin/rackboot}
S=rbstorm-s C=rbstorm-c
SERVER=10.66.0.1 GIADDR=10.67.0.1

for p in dnsmasq:dnsmasq-base nginx:nginx-light; do
	command -v "${p%%:*}" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${p#*:}" >/dev/null
done
[ -x "$RACKBOOT" ] || [ "$RACKBOOT" != bin/rackboot ] || make build >/dev/null
WORK=$(mktemp -d)
PIDS=""
stop() {
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	for p in $PIDS; do wait "$p" 2>/dev/null || true; done
	PIDS=""
}
cleanup() {
	stop
	ip netns del $S 2>/dev/null || true
	ip netns del $C 2>/dev/null || true
	[ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
go build -o "$WORK/storm" ./bench/internal/storm

# The server's namespace reaches the nodes' subnet, 10.67.0.0/16, through
# the relay's (the generator's) namespace, where every address of it is
# local: each simulated node binds its own leased address.
ip netns del $S 2>/dev/null || true
ip netns del $C 2>/dev/null || true
ip netns add $S
ip netns add $C
ip -n $S link add s0 type veth peer name c0 netns $C
ip -n $S addr add $SERVER/24 dev s0
ip -n $C addr add 10.66.0.2/24 dev c0
for ns in $S $C; do ip -n $ns link set lo up; done
ip -n $S link set s0 up
ip -n $C link set c0 up
ip -n $S route add 10.67.0.0/16 via 10.66.0.2
ip -n $C route add local 10.67.0.0/16 dev lo

# One set of boot files, world-readable for nginx's and dnsmasq's users,
# hard-linked into rackboot's data dir (one inode, one page cache).
WWW=$WORK/www
mkdir -p "$WWW/ipxe" "$WWW/artifacts/x86_64"
head -c "$((LOADER_KB << 10))" /dev/urandom >"$WWW/ipxe/snponly.efi"
head -c "$((KERNEL_MB << 20))" /dev/urandom >"$WWW/artifacts/x86_64/vmlinuz"
head -c "$((INITRD_MB << 20))" /dev/urandom >"$WWW/artifacts/x86_64/initrd"
cat >"$WWW/boot.ipxe" <<IPXE
#!ipxe
kernel http://$SERVER:8080/artifacts/x86_64/vmlinuz initrd=initrd console=ttyS0 || goto failed
initrd http://$SERVER:8080/artifacts/x86_64/initrd || goto failed
boot
:failed
sleep 5
IPXE
chmod -R a+rX "$WORK"

# The server's own subnet, which no node is on, and the nodes' relayed one.
cat >"$WORK/rackboot.yaml" <<YAML
dhcp:
  unknown_rate: -1
  subnets:
    - prefix: 10.66.0.0/24
      range: 10.66.0.100-10.66.0.200
    - prefix: 10.67.0.0/16
      range: 10.67.1.0-10.67.255.254
      relays: [$GIADDR/32]
YAML
nginx_conf "$WORK/nginx" "$SERVER:8080" "$WWW" 8192

# ready waits until the boot port answers.
ready() {
	for _ in $(seq 150); do
		ip netns exec $S curl -sf -o /dev/null -r 0-0 "http://$SERVER:8080/artifacts/x86_64/vmlinuz" && return
		sleep 0.1
	done
	cat "$WORK"/*.log >&2 2>/dev/null || true
	echo "the server did not start serving" >&2
	exit 1
}

start() {
	rm -rf "$WORK/data" "$WORK/dnsmasq.leases"
	case $1 in
	rackboot)
		mkdir -p "$WORK/data/firmware/ipxe" "$WORK/data/artifacts/x86_64"
		ln "$WWW/ipxe/snponly.efi" "$WORK/data/firmware/ipxe/"
		ln "$WWW/artifacts/x86_64/vmlinuz" "$WWW/artifacts/x86_64/initrd" "$WORK/data/artifacts/x86_64/"
		ip netns exec $S "$RACKBOOT" serve --config "$WORK/rackboot.yaml" --data-dir "$WORK/data" --interface s0 \
			--dhcp-mode authoritative --server-ip $SERVER --http-addr $SERVER:8080 --tftp-addr $SERVER:69 \
			--log-level warn >"$WORK/rackboot.log" 2>&1 &
		PIDS=$!
		ready
		if [ "$kind" = known ]; then
			# Known nodes: enrolled through the API ahead of the storm.
			tok=$(cat "$WORK/data/admin.token")
			for i in $(seq 0 $((N - 1))); do
				printf '{"mac":"02:b0:57:10:%02x:%02x","arch":"x86_64"}\n' $((i >> 8)) $((i & 255))
			done | ip netns exec $S xargs -P 8 -d '\n' -I{} curl -sf -o /dev/null -H "Authorization: Bearer $tok" \
				-H 'Content-Type: application/json' -d {} "http://$SERVER:8080/api/v1/nodes"
		fi
		;;
	anchor)
		ip netns exec $S dnsmasq --no-daemon --port=0 --interface=s0 --bind-interfaces --no-ping --quiet-dhcp \
			--conf-file=/dev/null --dhcp-range=10.67.1.0,10.67.255.254,255.255.0.0,1h \
			--dhcp-leasefile="$WORK/dnsmasq.leases" --dhcp-lease-max=200000 \
			--enable-tftp --tftp-root="$WWW" --tftp-max=2000 --dhcp-userclass=set:ipxe,iPXE \
			--dhcp-boot=tag:!ipxe,ipxe/snponly.efi,,$SERVER --dhcp-boot=tag:ipxe,http://$SERVER:8080/boot.ipxe \
			>"$WORK/dnsmasq.log" 2>&1 &
		PIDS=$!
		ip netns exec $S nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
		PIDS+=" $!"
		ready
		;;
	esac
}

# peak resident memory (kB) of the server processes, summed
peak_kb() {
	local s=0
	for p in $PIDS; do
		s=$((s + $(awk '/VmHWM/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)))
	done
	echo $s
}

echo "boot storm: ${LOADER_KB} KiB loader over TFTP, ${KERNEL_MB} MiB kernel + ${INITRD_MB} MiB initrd over HTTP; nodes $NODES; $REPEAT repeats; $KINDS nodes" >&2
declare -A runs
rc=0
first=${KINDS%% *}
for kind in $KINDS; do
	for N in $NODES; do
		for r in $(seq "$REPEAT"); do
			for server in $SERVERS; do
				# The anchor knows no nodes ahead: it runs once per size.
				[ $server = anchor ] && [ $kind != "$first" ] && continue
				start $server
				# A run with failed nodes is reported with the others, and
				# the script exits non-zero at the end.
				line=$(ip netns exec $C "$WORK/storm" -nodes "$N" -giaddr $GIADDR -server $SERVER) || {
					echo "$server $kind N=$N #$r had failures" >&2
					tail -n 20 "$WORK"/*.log >&2 || true
					rc=1
				}
				[ -n "$line" ] || exit 1
				line+=" server_peak_mb=$(($(peak_kb) / 1024))"
				stop
				name=$server
				[ $server = rackboot ] && name=rackboot-$kind
				echo "$name N=$N #$r $line"
				runs[$name.$N]+="$line"$'\n'
			done
		done
	done
done

echo
names=""
for server in $SERVERS; do
	if [ $server = rackboot ]; then
		for kind in $KINDS; do names+=" rackboot-$kind"; done
	else
		names+=" $server"
	fi
done
for N in $NODES; do
	for name in $names; do
		m=""
		for k in last_node_s last_files_s boot_p50_ms boot_p99_ms dhcp_p99_ms tftp_p99_ms ipxe_dhcp_p99_ms script_p99_ms kernel_p99_ms initrd_p99_ms lookup_p99_ms heartbeat_p99_ms resent failures server_peak_mb; do
			m+=" $k=$(median $k <<<"${runs[$name.$N]}")"
		done
		echo "median N=$N $name$m"
	done
	if [[ " $SERVERS " == *" anchor "* && " $SERVERS " == *" rackboot "* ]]; then
		b=$(median last_files_s <<<"${runs[anchor.$N]}")
		for kind in $KINDS; do
			a=$(median last_files_s <<<"${runs[rackboot-$kind.$N]}")
			awk -v a="$a" -v b="$b" -v n="$N" -v k="$kind" 'BEGIN { if (b > 0) printf "ratio N=%s %s nodes: time to the last node'"'"'s boot files rackboot/anchor=%.2f\n", n, k, a / b }'
		done
	fi
done
exit $rc
