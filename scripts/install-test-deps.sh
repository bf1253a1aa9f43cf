#!/usr/bin/env bash
# Installs the Debian packages rackboot's tests use: QEMU with OVMF and
# AAVMF firmware, the iPXE option ROMs SeaBIOS boots from, the real DHCP and
# TFTP clients and servers the tests talk to or compare with, and curl.
# Idempotent and quiet: it runs apt only for what is missing.
set -euo pipefail
pkgs=(qemu-system-x86 qemu-system-arm ovmf qemu-efi-aarch64 ipxe-qemu busybox tftp-hpa atftp
      dnsmasq-base curl iproute2 tftpd-hpa)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "the tests need these Debian packages: ${missing[*]}; run as root (sudo make test) to install them" >&2
	exit 1
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# tftpd-hpa's package starts a daemon on port 69: keep it from starting.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.rackboot
chmod +x /usr/sbin/policy-rc.d.rackboot
if [ ! -e /usr/sbin/policy-rc.d ]; then cp /usr/sbin/policy-rc.d.rackboot /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; fi
rm -f /usr/sbin/policy-rc.d.rackboot
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
