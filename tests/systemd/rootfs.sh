#!/usr/bin/env bash
# A minimal Debian (bookworm) root filesystem with systemd and dbus, for the systemd boot test
# (tests/tests/systemd_boot.rs). Built once with debootstrap from the mirror apt already uses and
# cached outside the repository; prints its path.
#   usage: tests/systemd/rootfs.sh [CACHE_DIR]   (default $TAOMINER_ROOTFS_CACHE or /var/cache/taominer)
set -euo pipefail
cache=${1:-${TAOMINER_ROOTFS_CACHE:-/var/cache/taominer}}
packages=systemd,systemd-sysv,dbus,dbus-bin
# The cache key: the suite and package list, so a change here builds a new tree.
key=$(printf 'bookworm %s v1' "$packages" | sha256sum | cut -c1-12)
root="$cache/nspawn-bookworm-$key"
if [ -x "$root/lib/systemd/systemd" ]; then
  echo "$root"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "rootfs.sh: debootstrap is missing (scripts/setup installs it)" >&2; exit 1; }
# The Debian mirror apt uses on this machine (deb822 or one-line sources): a URI whose path ends
# in /debian (not -security, not a third-party repository).
mirror=$({ grep -rhoE '^(URIs:|deb) +[a-z]+://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true; } \
  | awk '{print $2}' | { grep -E '/debian/?$' || true; } | head -1)
[ -n "$mirror" ] || { echo "rootfs.sh: no Debian mirror in /etc/apt/sources*" >&2; exit 1; }
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.rootfs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
debootstrap --variant=minbase --include="$packages" bookworm "$tmp/root" "$mirror" >"$tmp/log" 2>&1 \
  || { tail -20 "$tmp/log" >&2; exit 1; }
mv "$tmp/root" "$root"
echo "$root"
