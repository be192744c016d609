#!/usr/bin/env bash
# Peak memory of an S3 publish of a big artifact: builds a 2 GiB image of
# random data (incompressible) with the real binary and publishes it to a
# local moto server, under /usr/bin/time -v. The target is a peak RSS under
# 100 MB for imgbuild, whatever the artifact's size (multipart upload: about
# 4 parts of 8 MiB in memory).
#
#   scripts/bench-s3-rss.sh            # release build, 2 GiB
#   SIZE_MIB=512 scripts/bench-s3-rss.sh
#   IMGBUILD_BIN=target/debug/imgbuild scripts/bench-s3-rss.sh
#
# The build is a real `qemu` build that boots nothing: the disk is not
# bootable and QEMU stops after SeaBIOS gives up (see tests/s3_publish.rs).
# Needs what scripts/setup.sh installs (QEMU, /usr/bin/time, moto in the venv).
#
# Prints two figures:
#   imgbuild peak RSS   VmHWM of the imgbuild process itself (sampled from
#                       /proc until it exits; the high-water mark only grows)
#   time -v max RSS     GNU time's "Maximum resident set size": the largest of
#                       imgbuild and every child it waited for (qemu-img, QEMU)
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${SIZE_MIB:-2048}
venv=${IMGBUILD_VENV:-$HOME/.cache/imgbuild-venv}
target_dir=${CARGO_TARGET_DIR:-target}
bin=${IMGBUILD_BIN:-}
if [[ -z $bin ]]; then
    cargo build --release --locked >&2
    bin=$target_dir/release/imgbuild
fi
[[ -x /usr/bin/time ]] || { echo "bench-s3-rss: /usr/bin/time is missing (scripts/setup.sh installs it)" >&2; exit 1; }
[[ -x $venv/bin/moto_server ]] || scripts/moto-server.sh install

work=$(mktemp -d "${TMPDIR:-/tmp}/imgbuild-bench-s3.XXXXXX")
moto_pid=
cleanup() {
    [[ -n $moto_pid ]] && kill "$moto_pid" 2>/dev/null && wait "$moto_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/python" scripts/moto_serialized.py -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
endpoint=http://127.0.0.1:$port
for _ in $(seq 1 150); do
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1).read()' "$endpoint" 2>/dev/null && break
    sleep 0.2
done

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
"$venv/bin/python" -c '
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1").create_bucket(Bucket="bench")' "$endpoint"

echo "bench-s3-rss: writing ${size_mib} MiB of random data" >&2
head -c "$((size_mib << 20))" /dev/urandom > "$work/source.raw"
# No boot signature: SeaBIOS must not try to run random bytes.
dd if=/dev/zero of="$work/source.raw" bs=512 count=1 conv=notrunc status=none
sha=$(sha256sum "$work/source.raw" | cut -d' ' -f1)

cat > "$work/bench.json" <<EOF
{
  "name": "bench",
  "version": "1.0.0",
  "source": { "type": "cloud-image", "url": "$work/source.raw", "checksum": "sha256:$sha" },
  "builder": {
    "type": "qemu", "memory": "256M", "communicator": "none", "cloud_init": false, "shutdown_timeout": "2m",
    "qemu_args": ["-boot", "strict=on,reboot-timeout=1000", "-no-reboot"]
  },
  "export": {
    "publish": [ { "type": "s3", "bucket": "bench", "prefix": "images/", "region": "us-east-1", "endpoint_url": "$endpoint" } ]
  }
}
EOF

echo "bench-s3-rss: building and publishing with $bin" >&2
start=$(date +%s.%N)
IMGBUILD_CACHE_DIR=$work/cache IMGBUILD_WORK_DIR=$work \
    /usr/bin/time -v -o "$work/time.txt" "$bin" --no-progress build "$work/bench.json" 2>"$work/build.log" &
time_pid=$!
hwm=0
while kill -0 "$time_pid" 2>/dev/null; do
    pid=$(pgrep -P "$time_pid" -x imgbuild || true)
    if [[ -n $pid ]]; then
        now=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        [[ -n $now && $now -gt $hwm ]] && hwm=$now
    fi
    sleep 0.2
done
status=0
wait "$time_pid" || status=$?
end=$(date +%s.%N)
if ((status != 0)); then
    echo "bench-s3-rss: the build failed (exit $status):" >&2
    tail -n 30 "$work/build.log" >&2
    exit 1
fi
grep -E "exported|published|step timings|^      " "$work/build.log" >&2 || true
time_rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
printf 'artifact: %s MiB of random data, published to s3://bench/images/bench/1.0.0/\n' "$size_mib"
printf 'imgbuild peak RSS: %d MiB (%d kB)\n' "$((hwm / 1024))" "$hwm"
printf 'time -v max RSS:   %d MiB (%d kB)\n' "$((time_rss / 1024))" "$time_rss"
awk -v s="$start" -v e="$end" 'BEGIN { printf "wall time:         %.1f s\n", e - s }'
