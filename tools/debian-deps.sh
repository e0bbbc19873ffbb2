#!/bin/sh
# Installs, on Debian 12, the packages blkledger needs and are missing.
#   tools/debian-deps.sh build   to build and run the daemon
#   tools/debian-deps.sh test    to build and run the whole test suite (default)
set -eu

build="build-essential autoconf automake libtool pkg-config
liburing-dev libblkid-dev libudev-dev libsqlite3-dev libjson-c-dev libsystemd-dev"
# mkfs tools and blkid make real test devices; sqlite3 reads journals; udev provides
# systemd-udevd for the udev tests; varlink-go has the reference interface parser;
# xz-utils packs the distcheck tarball; libfuse3-dev and fuse3 make the hung device; the
# probe test formats one image with each of the other mkfs tools; systemd has
# systemd-analyze (the units' test) and systemd-socket-activate.
test="$build libcmocka-dev util-linux mount e2fsprogs sqlite3 udev systemd varlink-go procps sysvinit-utils xz-utils
libfuse3-dev fuse3 xfsprogs btrfs-progs dosfstools exfatprogs squashfs-tools genisoimage cryptsetup-bin"

case ${1:-test} in
build) want=$build ;;
test) want=$test ;;
*) echo "usage: $0 [build|test]" >&2; exit 2 ;;
esac

missing=
for p in $want; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages:$missing (run as root to install them)" >&2
        exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
