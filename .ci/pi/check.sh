#!/usr/bin/env bash
# The aarch64 check: does the runtime install work on a Raspberry Pi 5 and stream what x86 streams?
#
#   .ci/pi/check.sh        (as root; .ci/run runs it after the tests)
#
# In a Debian bookworm arm64 root emulated as a Cortex-A76 (.ci/pi/pi-root.sh; built from nothing when
# missing, else reused), without libGL as on Raspberry Pi OS Lite, it:
#   1. installs requirements.txt alone from the package registry into a venv, fails on any torch, CUDA or
#      triton package in it, and prints the resolved versions and the venv's size;
#   2. starts run.py as deploy/edge-detect.service would (its user, working directory, EDGE_* environment and
#      ExecStart), on 127.0.0.1;
#   3. over HTTP, like a user: uploads the model (the demo .pt) and a short lossless video, sets imgsz 320,
#      starts the stream and takes MJPEG frames from /video_feed; an x86_64 server on this host gets the same;
#   4. compares: the two servers' conversions of the .pt (same graph, bit-identical weights), their pictures
#      of the same frames, and the boxes the server's detect path finds on
#      those frames on each side (each with the ONNX its own server made), and the raw network output on one
#      identical input tensor (.ci/pi/drive.py states the tolerances and why);
#   5. checks that the aarch64 server offers NCNN for the model and that NCNN agrees with ONNX Runtime there
#      (fp32 raw outputs on the same input, fp16 boxes on the same frames; .ci/pi/drive.py engines);
#   6. resets both servers and checks that nothing uploaded is left.
# The host side runs with HOST_PYTHON (default .venv/bin/python: the development venv of README's test
# command). Emulation is slow (about 15-40 s per inference), so the emulated part is 3 frames at 320.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
HOST_PYTHON=${HOST_PYTHON:-$REPO/.venv/bin/python}
export PI_ROOT=${PI_ROOT:-/var/tmp/pi-root}
MODEL=${PI_CHECK_MODEL:-server/demo/model/shapes-yolov8n.pt}
FRAMES=${PI_CHECK_FRAMES:-3}
UNIT=deploy/edge-detect.service
PI_ROOT_SH="bash $REPO/.ci/pi/pi-root.sh"
WORK=$(mktemp -d /tmp/edge-aarch64-check.XXXXXX)
IN_ROOT_WORK=/tmp/edge-aarch64-check   # the same files, as the emulated side sees them
BANNED='^(torch|torchvision|torchaudio|triton|ultralytics|nvidia-[a-z0-9-]*|opencv-python)=='
check_started=$SECONDS
server_pids=()
# One check at a time per root: a second waits here instead of wiping the first one's project folder.
exec 9>"$PI_ROOT.lock"
flock 9


step="start"
say() { step="after: $*"; printf '[aarch64 %4ds] %s\n' $((SECONDS - check_started)) "$*"; }
unit_value() { sed -n "s/^$1=//p" "$UNIT" | tail -1; }
in_root() { $PI_ROOT_SH run "$@"; }

cleanup() {
  local status=$? pid
  # The emulated server's pid (written before it exec'd into python), then the host-side processes.
  [[ -f $PI_ROOT$IN_ROOT_WORK/arm-server.pid ]] && server_pids=("$(cat "$PI_ROOT$IN_ROOT_WORK/arm-server.pid")" "${server_pids[@]}")
  for pid in "${server_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${server_pids[@]}"; do timeout 30 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true; done
  if [[ $status != 0 ]]; then
    # The emulated side's logs last, and what failed on the very last line: a CI log is read from its end.
    for log in "$WORK"/[!a]*.log "$WORK"/a*.log; do [[ -f $log ]] && { echo "--- $log (last 40 lines)"; tail -40 "$log"; }; done
    echo "aarch64 check FAILED (exit $status) at step: $step, after $((SECONDS - check_started)) s" >&2
  fi
  rm -rf "$WORK" "${PI_ROOT:?}$IN_ROOT_WORK"
  exit $status
}
trap cleanup EXIT

# The check's Python runs by path (.ci is no package name), the repository on its import path.
host_python() { PYTHONPATH="$REPO" "$HOST_PYTHON" "$@"; }
drive() { host_python .ci/pi/drive.py "$@"; }
free_port() { "$HOST_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# -- 1. the root, and the runtime venv in it -----------------------------------------------------------
say "root: $PI_ROOT (built from nothing when missing)"
started=$SECONDS
$PI_ROOT_SH setup > "$WORK/setup.log" 2>&1
setup_s=$((SECONDS - started))
say "root ready in ${setup_s}s: $(tail -1 "$WORK/setup.log")"
if in_root 'ldconfig -p | grep -q "libGL\.so"'; then
  echo "the root has libGL, unlike Raspberry Pi OS Lite (PI_LITE=0?)" >&2; exit 1
fi

APP=$(unit_value WorkingDirectory)
VENV_PYTHON=$(unit_value ExecStart | awk '{print $1}')
VENV=${VENV_PYTHON%/bin/python}
[[ $APP == /* && $VENV_PYTHON == "$APP"/*/bin/python ]] || { echo "$UNIT: unexpected WorkingDirectory/ExecStart" >&2; exit 1; }
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf "$WORK/project.tar"
in_root "rm -rf '$APP' && mkdir -p '$APP'"
tar -xf "$WORK/project.tar" -C "$PI_ROOT$APP"

started=$SECONDS
in_root "python3 -m venv '$VENV' && '$VENV/bin/pip' install --disable-pip-version-check -q -r '$APP/requirements.txt'" \
  > "$WORK/pip.log" 2>&1
pip_s=$((SECONDS - started))
in_root "'$VENV/bin/pip' freeze --disable-pip-version-check" > "$WORK/freeze.txt"
venv_mb=$(du -sm "$PI_ROOT$VENV" | cut -f1)
say "pip install -r requirements.txt in ${pip_s}s; venv ${venv_mb} MB; resolved:"
sed 's/^/    /' "$WORK/freeze.txt"
if grep -Eiq "$BANNED" "$WORK/freeze.txt"; then
  echo "the runtime venv has packages it must not have:" >&2; grep -Ei "$BANNED" "$WORK/freeze.txt" >&2; exit 1
fi

# -- 2. both servers ---------------------------------------------------------------------------------
USER_NAME=$(unit_value User)
[[ -n $USER_NAME && $USER_NAME != root ]] || { echo "$UNIT must name a dedicated User" >&2; exit 1; }
STATE=/var/lib/$(unit_value StateDirectory)
in_root "id -u '$USER_NAME' >/dev/null 2>&1 || useradd --system --home-dir '$STATE' --shell /usr/sbin/nologin '$USER_NAME';
  mkdir -p '$STATE' && chown '$USER_NAME:' '$STATE' && chmod $(unit_value StateDirectoryMode) '$STATE'"
mkdir -p "$PI_ROOT$IN_ROOT_WORK"
# Two frames more than the emulated side takes: an x86 viewer may miss the first and the last of them.
drive video "$WORK/check.mkv" --frames $((FRAMES + 2)) > "$WORK/video.log" 2>&1
cp "$WORK/check.mkv" "$PI_ROOT$IN_ROOT_WORK/"

ARM_PORT=$(free_port)
X86_PORT=$(free_port)
while [[ $X86_PORT == "$ARM_PORT" ]]; do X86_PORT=$(free_port); done
# The unit's environment, then the check's own address: what systemd would run, on loopback only. The trial run
# of an upload gets 600 s instead of 60: emulation is 20-100x slower than a Pi (a loaded CI machine took > 60 s).
unit_env=$(sed -n 's/^Environment=//p' "$UNIT" | tr '\n' ' ')
ARM_UPLOADS=$(sed -n 's/^Environment=EDGE_UPLOADS=//p' "$UNIT")
in_root "echo \$\$ > '$IN_ROOT_WORK/arm-server.pid' && cd '$APP' && exec setpriv --reuid='$USER_NAME' --regid='$USER_NAME' --init-groups \
  env -i PATH=/usr/bin:/bin HOME='$STATE' $unit_env EDGE_HOST=127.0.0.1 EDGE_PORT=$ARM_PORT EDGE_MODEL_CHECK_TIMEOUT=600 \
  $(unit_value ExecStart)" > "$WORK/arm-server.log" 2>&1 &
server_pids+=($!)
"$HOST_PYTHON" run.py --host 127.0.0.1 --port "$X86_PORT" --uploads "$WORK/x86-uploads" > "$WORK/x86-server.log" 2>&1 &
server_pids+=($!)

# -- 3. the same uploads and stream on both ------------------------------------------------------------
started=$SECONDS
drive stream "http://127.0.0.1:$X86_PORT" --model "$MODEL" --video "$WORK/check.mkv" \
  --out "$WORK/x86" --frames $((FRAMES + 2)) --realtime --timeout 120 > "$WORK/x86-drive.log" 2>&1
say "x86_64 server streamed frames $(sed -n 's/.*frames (\(.*\)) in.*/\1/p' "$WORK/x86-drive.log")"
drive stream "http://127.0.0.1:$ARM_PORT" --model "$MODEL" --video "$WORK/check.mkv" \
  --out "$WORK/arm" --frames "$FRAMES" --timeout 900 --ready-timeout 600 2>&1 | tee "$WORK/arm-drive.log" | sed 's/^/    /'
stream_s=$((SECONDS - started))
frames=$("$HOST_PYTHON" -c 'import json, sys; print(",".join(map(str, json.load(open(sys.argv[1]))["frames"])))' "$WORK/arm/stream.json")
say "aarch64 server: uploads and $FRAMES MJPEG frames at 320 ($frames) in ${stream_s}s"

# -- 4. compare -------------------------------------------------------------------------------------
drive compare "$WORK/x86" "$WORK/arm" --min-frames "$FRAMES" | sed 's/^/    /'
x86_onnx=$(find "$WORK/x86-uploads" -name '*.onnx' ! -name '*.int8.onnx' | head -1)
arm_onnx=$(find "$PI_ROOT$ARM_UPLOADS" -name '*.onnx' ! -name '*.int8.onnx' | head -1)
[[ -n $x86_onnx && -n $arm_onnx ]] || { echo "a server kept no ONNX model" >&2; exit 1; }
say "ONNX each server runs: x86 $(sha256sum < "$x86_onnx" | cut -c1-16), aarch64 $(sha256sum < "$arm_onnx" | cut -c1-16)"
if [[ $MODEL == *.pt ]]; then
  drive graphs "$x86_onnx" "$arm_onnx" | sed 's/^/    /'
fi
started=$SECONDS
# The emulated side keeps its first frame's network input and output; the x86 side runs its network on that
# same input too (no extra inference under emulation).
in_root "cd '$APP' && PYTHONPATH=. '$VENV_PYTHON' .ci/pi/detections.py --model '${arm_onnx#"$PI_ROOT"}' \
  --video '$IN_ROOT_WORK/check.mkv' --frames '$frames' --save-tensors '$IN_ROOT_WORK/arm-tensors.npz' \
  --ncnn '$IN_ROOT_WORK/arm-ncnn.json'" > "$WORK/arm-boxes.json" 2> "$WORK/arm-detections.log"
host_python .ci/pi/detections.py --model "$x86_onnx" --video "$WORK/check.mkv" --frames "$frames" \
  --compare-tensors "$PI_ROOT$IN_ROOT_WORK/arm-tensors.npz" > "$WORK/x86-boxes.json" 2> "$WORK/x86-detections.log"
detect_s=$((SECONDS - started))
drive boxes "$WORK/x86-boxes.json" "$WORK/arm-boxes.json" --min-frames "$FRAMES" | sed 's/^/    /'
say "detections on frames $frames compared in ${detect_s}s (NCNN's runs included)"
drive engines "$WORK/arm/stream.json" "$WORK/arm-boxes.json" "$PI_ROOT$IN_ROOT_WORK/arm-ncnn.json" \
  --min-frames "$FRAMES" | sed 's/^/    /'

# -- 6. reset ---------------------------------------------------------------------------------------
drive reset "http://127.0.0.1:$ARM_PORT" | sed 's/^/    /'
drive reset "http://127.0.0.1:$X86_PORT" > "$WORK/x86-reset.log"
left=$(find "$PI_ROOT$ARM_UPLOADS" -type f \( -name '*.onnx' -o -name '*.pt' -o -name '*.mkv' -o -name '*.ncnn.*' \) | wc -l)
[[ $left == 0 ]] || { echo "reset left $left files in $ARM_UPLOADS" >&2; exit 1; }
say "passed: root ${setup_s}s, pip ${pip_s}s, stream ${stream_s}s, detections ${detect_s}s, venv ${venv_mb} MB; total $((SECONDS - check_started))s"
