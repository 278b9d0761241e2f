#!/usr/bin/env bash
# A Raspberry Pi 5 stand-in: a Debian bookworm arm64 root (what Raspberry Pi OS is built on, Python 3.11) run
# under qemu user-mode emulation of a Cortex-A76 (the Pi 5's core). It proves that an install resolves to
# aarch64 wheels and that the code runs on aarch64; its timings mean nothing (emulation is 20-100x slower).
#
#   pi-root.sh setup          build the root once, or reuse a finished one (about 10-15 min from nothing;
#                             needs root and the Debian package registry)
#   pi-root.sh run 'CMD'      run CMD with bash inside the root, e.g. pi-root.sh run 'python3 -V'
#   pi-root.sh copy DIR DEST  copy DIR's contents to DEST inside the root (DEST is emptied first)
#   pi-root.sh umount         undo the bind mounts
#   pi-root.sh mirror         print the Debian mirror this machine's apt uses (bench/aarch64/qemu-count.sh asks)
#
# PI_ROOT (default /var/tmp/pi-root) is where the root lives. It is left out: desktop libraries such as
# libGL, as Raspberry Pi OS Lite leaves them out (PI_LITE=0 adds libgl1 and libglib2.0-0).
# Lessons already paid for:
#   - qemu 7.2 (bookworm) crashes importing onnxruntime 1.32; qemu >= 10 (bookworm-backports) runs it.
#   - binfmt entries with flag F pin the interpreter at registration: re-register after upgrading qemu.
#   - /proc, /sys and /dev must be bind-mounted or onnxruntime's cpuinfo fails.
#   - debootstrap creates python3 long before it has finished: a root counts as built only once
#     --second-stage has removed /debootstrap; an interrupted build is unmounted and started again.
set -euo pipefail
ROOT=${PI_ROOT:-/var/tmp/pi-root}
LITE=${PI_LITE:-1}
BIND_MOUNTS=(proc sys dev)

mirror() {  # the Debian mirror this machine's apt already uses
  local m
  m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -n $m ]] || m=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [[ -n $m ]] || { echo "no Debian mirror found in apt sources" >&2; exit 1; }
  echo "$m"
}

qemu_major() { qemu-aarch64-static --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1; }

ensure_qemu() {  # qemu >= 10 and debootstrap installed; the aarch64 binfmt entry registered
  local major fresh=0 bm=/proc/sys/fs/binfmt_misc
  major=$(qemu_major || true)
  if [[ -z $major || $major -lt 10 ]]; then
    echo "deb $(mirror) bookworm-backports main" > /etc/apt/sources.list.d/pi-root-backports.list
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports qemu-user-static >/dev/null
    fresh=1
  fi
  if ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  [[ -e $bm/register ]] || mount -t binfmt_misc binfmt_misc $bm
  # Re-registering drops the entry for a moment: only for a new qemu, never under a running check.
  if [[ $fresh == 1 || ! -e $bm/qemu-aarch64 ]]; then
    [[ -e $bm/qemu-aarch64 ]] && echo -1 > $bm/qemu-aarch64
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > $bm/register
  fi
}

built() { [[ -x $ROOT/usr/bin/python3 && ! -e $ROOT/debootstrap ]]; }

unmount_all() {
  local d
  for d in "${BIND_MOUNTS[@]}"; do
    if mountpoint -q "$ROOT/$d"; then umount -l "$ROOT/$d"; fi
  done
}

in_use() {  # a process running inside the root (a build or a check that is still going)
  local p
  for p in /proc/[0-9]*; do
    [[ $(readlink "$p/root" 2>/dev/null) == "$ROOT" ]] && return 0
  done
  return 1
}

discard_unfinished() {  # never rm -rf through a bind mount of the host's /dev, /proc or /sys
  if in_use; then echo "a process is running inside $ROOT (a build in progress?); try again later" >&2; exit 1; fi
  unmount_all
  local d
  for d in "${BIND_MOUNTS[@]}"; do
    if mountpoint -q "$ROOT/$d"; then echo "$ROOT/$d is still mounted; not deleting $ROOT" >&2; exit 1; fi
  done
  echo "discarding the unfinished root at $ROOT" >&2
  rm -rf --one-file-system "$ROOT"
}

mounts() {
  local d
  for d in "${BIND_MOUNTS[@]}"; do
    mountpoint -q "$ROOT/$d" || mount --bind "/$d" "$ROOT/$d"
  done
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  mkdir -p "$ROOT/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/"
}

in_root() {
  # The host's pip settings (find-links, constraints, extra indexes) point at folders the root does not have.
  QEMU_CPU=cortex-a76 chroot "$ROOT" /usr/bin/env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_INDEX_URL \
    -u PIP_EXTRA_INDEX_URL -u VIRTUAL_ENV HOME=/root PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    bash -c "$*"
}

case ${1:-} in
  setup)
    ensure_qemu
    if [[ -e $ROOT/debootstrap ]]; then discard_unfinished; fi
    if [[ -e $ROOT ]] && ! built && [[ -n $(ls -A "$ROOT") ]]; then
      echo "$ROOT is neither empty nor a root this script built; set PI_ROOT elsewhere" >&2; exit 1
    fi
    if ! built; then
      pkgs=python3,python3-venv,python3-pip,ca-certificates
      [[ $LITE == 1 ]] || pkgs=$pkgs,libgl1,libglib2.0-0
      debootstrap --arch=arm64 --foreign --variant=minbase --include=$pkgs bookworm "$ROOT" "$(mirror)"
      chroot "$ROOT" /debootstrap/debootstrap --second-stage
    fi
    built || { echo "the root at $ROOT did not finish building" >&2; exit 1; }
    mounts
    in_root 'python3 -c "import platform, sys; print(platform.machine(), sys.version.split()[0])"'
    ;;
  run)
    shift
    built || { echo "no finished root at $ROOT: run '$0 setup' first" >&2; exit 1; }
    ensure_qemu >/dev/null 2>&1 || true
    mounts
    in_root "$*"
    ;;
  copy)
    [[ $# == 3 && $3 == /* ]] || { echo "usage: $0 copy DIR /DEST" >&2; exit 2; }
    rm -rf "${ROOT:?}$3" && mkdir -p "$ROOT$3" && cp -a "$2/." "$ROOT$3/"
    ;;
  umount)
    unmount_all
    ;;
  mirror)
    mirror
    ;;
  *) sed -n 2,20p "$0"; exit 2 ;;
esac
