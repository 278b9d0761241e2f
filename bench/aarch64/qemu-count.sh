#!/usr/bin/env bash
# Count the aarch64 instructions a program of the emulated Pi root executes: a deterministic cost measure for the
# Raspberry Pi 5's instruction set on an x86 machine. qemu's user-mode emulator, built from Debian's source package
# with TCG plugins enabled (Debian's own qemu-user is static and cannot load plugins), runs the root's binaries as a
# Cortex-A76 (fp16 arithmetic and dot-product advertised, so libraries take the code paths a Pi 5 takes) and the
# plugin libinsn counts every guest instruction.
#
#   qemu-count.sh build                       build qemu-aarch64 + libinsn.so + libmarks.so once (about 4 min
#                                             on 2 cores)
#   qemu-count.sh build-marks                 build only libmarks.so (bench/aarch64/stage_marks.c) for a qemu built
#                                             without it (fetches qemu's source package again for its header)
#   qemu-count.sh count PROGRAM [ARGS...]     run PROGRAM (a path inside PI_ROOT, e.g. /usr/bin/python3.11)
#                                             and print "instructions: N" last
#
# COUNT_PLUGIN=marks counts with libmarks.so instead of libinsn.so: the same total, plus a "mark ..." line in the
# log each time the guest calls syscall(19777, code) (bench/aarch64/stage_marks.c). COUNT_LOG=FILE keeps the plugin's
# log there (it is deleted otherwise).
# PI_ROOT (default /var/tmp/pi-root) is the root built by pi-root.sh. QEMU_COUNT (default /var/tmp/qemu-count)
# is where the build lives. COUNT_ENV may hold extra VAR=value words for the program (PYTHONPATH=... etc.).
# Facts found while writing it:
#   - the program runs with `-L PI_ROOT`, not in a chroot (the plugin build is dynamic: its x86 libraries are on the
#     host). Give the interpreter's real path: a venv's bin/python is a symlink that resolves on the host.
#     For a venv, run PI_ROOT/usr/bin/python3.11 with COUNT_ENV="PYTHONPATH=PI_ROOT/opt/VENV/lib/python3.11/site-packages".
#   - counts are exact and repeat run to run for a single-threaded program; with several threads, spin-waits
#     add instructions that depend on timing: count with one thread (ORT intra_op_num_threads=1 and
#     session.intra_op.allow_spinning=0; ncnn opt.num_threads=1; OMP_NUM_THREADS=1).
#   - subtract a run doing N frames from one doing N+k frames to remove start-up (imports, session creation).
#   - instructions are not cycles: SIMD width, cache misses and IPC differ. Compare ratios of like work.
set -euo pipefail
ROOT=${PI_ROOT:-/var/tmp/pi-root}
DIR=${QEMU_COUNT:-/var/tmp/qemu-count}
HERE=$(cd "$(dirname "$0")" && pwd)

mirror() { bash "$HERE/../../.ci/pi/pi-root.sh" mirror; }  # the one place that finds it: the check's root script

fetch_source() {  # qemu's Debian source package into $DIR/src; prints the tarball's path
  mkdir -p "$DIR/src"
  local list=/etc/apt/sources.list.d/qemu-count-src.list
  echo "deb-src $(mirror) trixie main" > $list
  apt-get update -qq
  (cd "$DIR/src" && apt-get source --download-only qemu/trixie >/dev/null 2>&1) || true
  rm -f $list; apt-get update -qq
  local tarball
  tarball=$(ls "$DIR"/src/qemu_*.orig.tar.xz 2>/dev/null | head -1)
  [[ -n $tarball ]] || { echo "could not download qemu's source package" >&2; exit 1; }
  echo "$tarball"
}

build_marks() {  # libmarks.so against the plugin header kept in $DIR/include
  gcc -shared -fPIC -O2 -Wall -I"$DIR/include" $(pkg-config --cflags glib-2.0) \
    -o "$DIR/libmarks.so" "$HERE/stage_marks.c" $(pkg-config --libs glib-2.0)
}

build() {
  [[ -x $DIR/qemu-aarch64 && -f $DIR/libinsn.so && -f $DIR/libmarks.so ]] && { echo "already built in $DIR"; return; }
  if [[ -x $DIR/qemu-aarch64 && -f $DIR/libinsn.so ]]; then marks_only; return; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ninja-build pkg-config libglib2.0-dev flex bison >/dev/null
  python3 -c 'import mesonbuild' 2>/dev/null || python3 -m pip install -q 'meson>=1.5' pycotap
  local tarball
  tarball=$(fetch_source)
  tar -xf "$tarball" -C "$DIR/src"
  local src
  src=$(ls -d "$DIR"/src/qemu-*/ | head -1)
  mkdir -p "$src/build" "$DIR/include"
  (cd "$src/build" && ../configure --target-list=aarch64-linux-user --enable-plugins --disable-system \
      --disable-tools --disable-docs --disable-werror --disable-install-blobs >/dev/null &&
   ninja -j"$(nproc)" qemu-aarch64 tests/tcg/plugins/libinsn.so contrib/plugins/libhowvec.so >/dev/null)
  cp "$src/build/qemu-aarch64" "$src/build/tests/tcg/plugins/libinsn.so" "$src/build/contrib/plugins/libhowvec.so" "$DIR/"
  cp "$src/include/qemu/qemu-plugin.h" "$DIR/include/"
  build_marks
  rm -rf "$DIR/src"
  echo "built $DIR/qemu-aarch64 with plugins"
}

marks_only() {  # a qemu built by an earlier version of this script: only the header is missing
  if [[ ! -f $DIR/include/qemu-plugin.h ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config libglib2.0-dev >/dev/null
    local tarball
    tarball=$(fetch_source)
    mkdir -p "$DIR/include"
    tar -xf "$tarball" -C "$DIR/src" --wildcards '*/include/qemu/qemu-plugin.h'
    cp "$DIR"/src/qemu-*/include/qemu/qemu-plugin.h "$DIR/include/"
    rm -rf "$DIR/src"
  fi
  build_marks
  echo "built $DIR/libmarks.so"
}

case ${1:-} in
  build) build ;;
  build-marks) marks_only ;;
  count)
    shift
    [[ -x $DIR/qemu-aarch64 ]] || { echo "run '$0 build' first" >&2; exit 1; }
    [[ -x $ROOT/usr/bin/python3 ]] || { echo "no root at $ROOT: run pi-root.sh setup first" >&2; exit 1; }
    prog=$1; shift
    plugin=$DIR/libinsn.so
    [[ ${COUNT_PLUGIN:-insn} == marks ]] && plugin=$DIR/libmarks.so
    [[ -f $plugin ]] || { echo "no $plugin: run '$0 build' (or build-marks)" >&2; exit 1; }
    log=${COUNT_LOG:-$(mktemp)}
    status=0
    # shellcheck disable=SC2086
    env -i PATH=/usr/bin:/bin OMP_NUM_THREADS=1 ${COUNT_ENV:-} \
      "$DIR/qemu-aarch64" -L "$ROOT" -cpu cortex-a76 -plugin "$plugin" -d plugin -D "$log" \
      "$ROOT$prog" "$@" || status=$?
    echo "instructions: $(awk '/^total insns:/{print $3}' "$log")"
    [[ -n ${COUNT_LOG:-} ]] || rm -f "$log"
    exit $status ;;
  *) sed -n '2,28p' "$0"; exit 2 ;;
esac
