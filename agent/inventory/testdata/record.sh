#!/bin/sh
# record.sh DEST copies the /sys, /proc and /dev files that agent/inventory
# reads into DEST, keeping sysfs symlinks (they are relative, so the copy
# resolves inside DEST), so a real machine becomes a test tree. Serial
# numbers, UUIDs and MACs are replaced with fake ones here; the binary DMI
# table still holds serials and must be scrubbed before it is committed.
set -u
dest=${1:?usage: record.sh DEST}
mkdir -p "$dest"

cpf() {
	for f; do
		[ -f "$f" ] && [ -r "$f" ] || continue
		mkdir -p "$dest$(dirname "$f")"
		cat "$f" >"$dest$f" 2>/dev/null || rm -f "$dest$f"
	done
}
cpl() {
	for l; do
		[ -L "$l" ] || continue
		mkdir -p "$dest$(dirname "$l")"
		ln -sfn "$(readlink "$l")" "$dest$l"
	done
}

cpf /proc/cpuinfo /proc/meminfo
c=/sys/devices/system/cpu
cpf $c/online $c/present $c/possible
for d in $c/cpu[0-9]*; do
	cpf $d/topology/physical_package_id $d/topology/core_id $d/topology/die_id \
		$d/topology/thread_siblings_list $d/cpufreq/cpuinfo_max_freq \
		$d/regs/identification/midr_el1
done
n=/sys/devices/system/node
cpf $n/online $n/possible
for d in $n/node[0-9]*; do cpf $d/cpulist $d/meminfo; done

dmi=$(readlink -f /sys/class/dmi/id)
cpl /sys/class/dmi/id
for f in "$dmi"/*; do cpf "$f"; done
for f in product_serial board_serial chassis_serial; do
	[ -f "$dest$dmi/$f" ] && echo "FAKE-$f-0001" >"$dest$dmi/$f"
done
[ -f "$dest$dmi/product_uuid" ] && echo 00000000-0000-4000-8000-000000000001 >"$dest$dmi/product_uuid"
cpf /sys/firmware/dmi/tables/DMI /sys/firmware/dmi/tables/smbios_entry_point

if [ -d /sys/firmware/efi ]; then
	mkdir -p "$dest/sys/firmware/efi/efivars"
	cpf /sys/firmware/efi/fw_platform_size
	cpf /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
fi

for l in /sys/bus/pci/devices/*; do
	cpl "$l"
	d=$(readlink -f "$l")
	for a in vendor device subsystem_vendor subsystem_device class revision numa_node \
		current_link_speed max_link_speed current_link_width max_link_width resource \
		sriov_totalvfs sriov_numvfs config; do
		cpf "$d/$a"
	done
	cpl "$d/iommu_group" "$d/driver" "$d/physfn" "$d"/virtfn*
	for t in "$d"/mdev_supported_types/*; do cpf "$t/name" "$t/available_instances" "$t/device_api"; done
done
for g in /sys/kernel/iommu_groups/*; do
	[ -d "$g" ] || continue
	mkdir -p "$dest$g/devices"
	for m in "$g"/devices/*; do cpl "$m"; done
done

i=0
for l in /sys/class/net/*; do
	cpl "$l"
	d=$(readlink -f "$l")
	cpf "$d/address" "$d/carrier" "$d/speed" "$d/type"
	i=$((i + 1))
	[ -f "$dest$d/address" ] && [ "$(cat "$d/address")" != 00:00:00:00:00:00 ] &&
		printf '02:00:00:00:00:%02x\n' $i >"$dest$d/address"
	cpl "$d/device"
	[ -L "$d/device" ] && cpl "$(readlink -f "$d/device")/driver"
done

for l in /sys/block/*; do
	cpl "$l"
	d=$(readlink -f "$l")
	cpf "$d/size" "$d/queue/rotational" "$d/wwid"
	# Attributes under device/ go to the link's target, so that device
	# stays a symlink in the copy.
	cpl "$d/device"
	[ -L "$d/device" ] || continue
	dev=$(readlink -f "$d/device")
	cpf "$dev/model" "$dev/vendor" "$dev/serial" "$dev/wwid"
	[ -f "$dest$dev/serial" ] && echo "FAKESERIAL$(basename "$d")" >"$dest$dev/serial"
done
for l in /dev/disk/by-path/*; do cpl "$l"; done
