#!/usr/bin/env bash
# Installs the Debian packages rackboot's tests use: QEMU with SeaBIOS,
# OVMF and AAVMF firmware, the iPXE option ROMs SeaBIOS boots from and
# Debian's iPXE loaders, the real DHCP and TFTP clients and servers the
# tests talk to or compare with, curl, and OpenIPMI's BMC simulator with
# ipmitool (the power tests' BMC and its independent reader), grub-common's
# grub-mkimage (the AArch64 HTTP-boot GRUB), ironic-inspector (whose own
# hooks read the inventory export), python3-ironic (whose dnsmasq DHCP
# provider writes the files ironic/dnsmasq reads, and reads its lease
# file), ironic-api, ironic-conductor and python3-ironicclient's baremetal
# CLI (lab.StartIronic runs a whole Ironic, isolated, for the lab's
# tests; the packages also pull in udev, open-iscsi, xinetd, pxelinux and
# uwsgi), libvirt-daemon-system's
# libvirtd (the hypervisor tests run their
# own, isolated), libvirt-clients' virt-xml-validate with the xmllint it
# runs (libxml2-utils; libvirt-clients does not pull it in), which checks
# generated domain XML against libvirt's schemas; gcc and libc6-dev,
# which build the fake libcuda the GPU load helper's tests run against;
# Kea (kea-dhcp4-server, and kea-admin for perfdhcp) and nginx-light, the
# anchors the benchmark scripts' smoke runs start on their own ports;
# nftables, whose nft drops packets for the agent's fault tests (kernels
# without netem have nftables' random numbers); e2fsprogs, whose mkfs.ext4
# makes the filesystem the wedged-disk test freezes (util-linux's
# fsfreeze);
# and lets apt fetch arm64 packages (the AArch64 test kernel and
# loaders). Idempotent and quiet: it
# changes nothing when all is there.
set -euo pipefail
# dnsmasq-base and not dnsmasq: the latter starts a system-wide daemon
# that would hold port 53 and 67; the tests run their own.
pkgs=(qemu-system-x86 qemu-system-arm seabios ovmf qemu-efi-aarch64 ipxe ipxe-qemu
      busybox udhcpc tftp-hpa tftpd-hpa atftp dnsmasq-base curl iproute2 qemu-utils util-linux
      openipmi ipmitool grub-common python3-ironic-inspector python3-ironic
      ironic-api ironic-conductor python3-ironicclient libvirt-daemon-system libvirt-clients libxml2-utils
      gcc libc6-dev kea-dhcp4-server kea-admin nginx-light nftables e2fsprogs)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
need_arm64=0
dpkg --print-foreign-architectures | grep -qx arm64 || need_arm64=1
if [ ${#missing[@]} -eq 0 ] && [ $need_arm64 -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "the tests need: ${missing[*]}${missing[*]:+ }$([ $need_arm64 -eq 1 ] && echo 'dpkg --add-architecture arm64'); run as root (sudo make deps)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [ $need_arm64 -eq 1 ]; then
	echo "adding the arm64 architecture to dpkg" >&2
	dpkg --add-architecture arm64
fi
apt-get update -qq
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
echo "installing ${missing[*]}" >&2
# tftpd-hpa's package starts a daemon on port 69, kea-dhcp4-server one on
# port 67, nginx-light one on port 80, libvirt-daemon-system
# a system libvirtd, ironic-api and ironic-conductor system services (and
# their dependencies xinetd, udev, iscsid and open-iscsi), unless policy-rc.d says no;
# an existing policy is left alone.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
