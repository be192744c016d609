#!/usr/bin/env bash
# Runs templates/ec2-golden.json without an AWS account: a local EC2 API
# (moto server on 127.0.0.1) and, since moto's instances are not real
# machines, a QEMU guest from the test fixture standing in for the instance
# (reached through the template's ssh.host/ssh.port override). Everything
# else is the real ec2 builder: source AMI lookup, key pair, security group,
# RunInstances (spot), provisioning and verify over SSH, CreateImage,
# CopyImage, tags, cleanup; then `imgbuild gc --dry-run` shows nothing left.
#
#   scripts/setup.sh && scripts/ec2-demo.sh [imgbuild binary]
set -euo pipefail
cd "$(dirname "$0")/.."
imgbuild=${1:-${CARGO_TARGET_DIR:-target}/release/imgbuild}
[[ -x $imgbuild ]] || cargo build --release
venv=${IMGBUILD_VENV:-$HOME/.cache/imgbuild-venv}
fixture=$(dirname "$(tests/fixtures/build-base-image.sh | tail -1)")
work=$(mktemp -d)
export MOTO_STATE_DIR=$work/moto
cleanup() {
    [[ -n ${qemu_pid:-} ]] && kill "$qemu_pid" 2>/dev/null
    scripts/moto-server.sh stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

eval "$(scripts/moto-server.sh start)"
# Two candidate sources; `most_recent` must pick the second.
"$venv/bin/python" -c '
import boto3, time
ec2 = boto3.client("ec2", region_name="eu-west-1")
for name in ("debian-12-amd64-20261101", "debian-12-amd64-20261120"):
    print("source candidate", ec2.register_image(Name=name)["ImageId"], name)
    time.sleep(0.05)
'

password="demo-$RANDOM$RANDOM"
printf '%s\n' '#cloud-config' 'disable_root: false' 'ssh_pwauth: true' 'users:' '  - name: root' \
    '    lock_passwd: false' '    shell: /bin/sh' 'chpasswd:' '  expire: false' '  users:' '    - name: root' \
    "      password: \"$password\"" '      type: text' >"$work/user-data"
printf 'instance-id: iid-ec2-demo\nlocal-hostname: stand-in\n' >"$work/meta-data"
tests/fixtures/make-seed.sh "$work/seed.img" "$work/user-data" "$work/meta-data"
qemu-img create -q -f qcow2 -F qcow2 -b "$fixture/base.qcow2" "$work/disk.qcow2"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
qemu-system-x86_64 -nodefaults -display none -machine q35,accel=tcg -cpu max -m 256M \
    -serial "file:$work/console.log" \
    -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=net0 \
    -device virtio-rng-pci \
    -drive "file=$work/disk.qcow2,format=qcow2,if=virtio" \
    -drive "file=$work/seed.img,format=raw,if=virtio,readonly=on" &
qemu_pid=$!

IMGBUILD_VAR_ssh_password=$password "$imgbuild" build templates/ec2-golden.json \
    --store "$work/store" \
    --var endpoint_url="$AWS_ENDPOINT_URL" --var source_owner=self \
    --var ssh_host=127.0.0.1 --var ssh_port="$port" --var ssh_username=root --var ssh_cidr=127.0.0.1/32
"$imgbuild" versions debian-web --store "$work/store"
"$imgbuild" gc --region eu-west-1 --region eu-central-1 --dry-run
