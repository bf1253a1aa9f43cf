#!/usr/bin/env bash
# Fetches the Debian kernels the lab's test payload boots, with apt, into
# DIR: DIR/vmlinuz-x86_64 (the signed generic amd64 kernel, which Secure
# Boot accepts) and DIR/vmlinuz-aarch64 (the arm64 cloud kernel), each with
# a .package file naming the package and version it came from. A kernel
# whose package is still the newest is not fetched again.
#
# Usage: scripts/fetch-test-kernels.sh DIR
set -euo pipefail
if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$(mkdir -p "$1" && cd "$1" && pwd)

# arm64 packages are only downloadable once dpkg knows the architecture.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	if [ "$(id -u)" != 0 ]; then
		echo "dpkg does not know arm64: run as root, or: dpkg --add-architecture arm64 && apt-get update" >&2
		exit 1
	fi
	dpkg --add-architecture arm64
	apt-get update -qq
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() { # META-PACKAGE DEB-ARCH OUR-ARCH
	local meta=$1 arch=$2 ours=$3 pkg version out
	# The meta package depends on exactly one versioned kernel package.
	pkg=$(apt-cache depends --important "$meta:$arch" 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {sub(/:.*/, "", $2); print $2; exit}')
	if [ -z "$pkg" ]; then
		echo "$meta:$arch: no kernel package found (apt-get update?)" >&2
		return 1
	fi
	version=$(apt-cache show --no-all-versions "$pkg:$arch" | awk '$1 == "Version:" {print $2; exit}')
	out="$dir/vmlinuz-$ours"
	if [ -s "$out" ] && [ "$(cat "$out.package" 2>/dev/null)" = "$pkg $version" ]; then
		return 0
	fi
	# Download as whoever runs this: apt's _apt user cannot write to $work.
	(cd "$work" && apt-get download -qq -o APT::Sandbox::User="$(id -un)" "$pkg:$arch" >/dev/null)
	mkdir -p "$work/$ours"
	dpkg-deb -x "$work/${pkg}_"*"_$arch.deb" "$work/$ours"
	cp "$work/$ours/boot/vmlinuz-${pkg#linux-image-}" "$out.tmp"
	mv "$out.tmp" "$out"
	echo "$pkg $version" > "$out.package"
	echo "$out: $pkg $version"
}

fetch linux-image-amd64 amd64 x86_64
fetch linux-image-cloud-arm64 arm64 aarch64
