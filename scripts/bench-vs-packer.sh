#!/usr/bin/env bash
# Builds the same image with imgbuild and with Debian's packer (1.6.6, qemu
# builder, disk_image: true) from the same fixture base, with the same
# provisioners, under TCG, and prints both wall times and the ratio.
# Not a test: timings depend on the machine. Usage: scripts/bench-vs-packer.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
command -v packer >/dev/null || { echo "install packer: apt-get install -y packer" >&2; exit 2; }

image=$(tests/fixtures/build-base-image.sh)
fixture=$(dirname "$image")
cargo build --release --quiet
imgbuild=${CARGO_TARGET_DIR:-$PWD/target}/release/imgbuild

work=$(mktemp -d)
trap 'pkill -f "$work" 2>/dev/null || true; rm -rf "$work"' EXIT

# Packer gets the same seed imgbuild would write: a key for root.
ssh-keygen -q -t ed25519 -N '' -f "$work/key"
cat > "$work/user-data" <<UD
#cloud-config
disable_root: false
users:
  - name: root
    lock_passwd: false
    ssh_authorized_keys:
      - $(cat "$work/key.pub")
UD
printf 'instance-id: packer-bench\nlocal-hostname: bench\n' > "$work/meta-data"
tests/fixtures/make-seed.sh "$work/seed.img" "$work/user-data" "$work/meta-data"

sha=$(sha256sum "$image" | cut -d' ' -f1)
tpl=$PWD/templates
cat > "$work/packer.json" <<JSON
{
  "builders": [{
    "type": "qemu",
    "iso_url": "$image",
    "iso_checksum": "sha256:$sha",
    "disk_image": true,
    "format": "qcow2",
    "accelerator": "tcg",
    "headless": true,
    "memory": 512,
    "cpus": 1,
    "disk_size": "1024M",
    "disk_interface": "virtio",
    "net_device": "virtio-net",
    "output_directory": "$work/packer-out",
    "vm_name": "packer-bench.qcow2",
    "qemuargs": [
      ["-drive", "file=$work/packer-out/packer-bench.qcow2,if=virtio,cache=unsafe,format=qcow2"],
      ["-drive", "file=$work/seed.img,if=virtio,format=raw,readonly=on"],
      ["-device", "virtio-rng-pci"]
    ],
    "ssh_username": "root",
    "ssh_private_key_file": "$work/key",
    "ssh_timeout": "3m",
    "shutdown_command": "poweroff"
  }],
  "provisioners": [
    { "type": "shell", "inline": ["echo 'Welcome to fixture-web' > /etc/motd", "uname -r"] },
    { "type": "shell", "script": "$tpl/files/configure.sh",
      "environment_vars": ["GREETING=it's \"quoted\" & \$HOME", "TRICKY=a;b|c", "ROLE=web"] },
    { "type": "file", "source": "$tpl/files/site", "destination": "/srv" },
    { "type": "shell", "inline": ["echo rebooting", "reboot"], "expect_disconnect": true },
    { "type": "shell", "pause_before": "1s", "inline": ["test -f /srv/site/conf.d/site.conf", "cat /etc/imgbuild/greeting"] },
    { "type": "shell", "script": "$PWD/provisioners/reset-identity.sh" }
  ]
}
JSON

# The same work for imgbuild: same base, same provisioners, no verify stage
# (Packer has none), publishing one qcow2.
cat > "$work/imgbuild.json" <<JSON
{
  "name": "bench", "version": "1.0.0",
  "source": { "type": "cloud-image", "url": "$image", "checksum": "sha256:$sha" },
  "builder": { "type": "qemu", "accelerator": "tcg", "cpus": 1, "memory": "512M", "disk_size": "1G",
               "ssh": { "username": "root", "timeout": "3m" }, "shutdown_command": "poweroff" },
  "provisioners": [
    { "type": "shell", "inline": ["echo 'Welcome to fixture-web' > /etc/motd", "uname -r"] },
    { "type": "shell", "script": "$tpl/files/configure.sh",
      "env": { "GREETING": "it's \"quoted\" & \$HOME", "TRICKY": "a;b|c", "ROLE": "web" } },
    { "type": "file", "source": "$tpl/files/site", "destination": "/srv/site" },
    { "type": "shell", "inline": ["echo rebooting", "reboot"], "expect_disconnect": true },
    { "type": "shell", "inline": ["test -f /srv/site/conf.d/site.conf", "cat /etc/imgbuild/greeting"] },
    { "type": "shell", "script": "$PWD/provisioners/reset-identity.sh" }
  ],
  "export": { "formats": [ { "format": "qcow2" } ] }
}
JSON

now() { date +%s.%N; }
imgbuild_total=0
packer_total=0
for i in $(seq "$runs"); do
    rm -rf "$work/store" "$work/packer-out"
    t0=$(now)
    "$imgbuild" build "$work/imgbuild.json" --no-progress -q --store "$work/store" --set-version "1.0.$i"
    t1=$(now)
    (cd "$work" && PACKER_LOG=0 packer build -color=false packer.json >"$work/packer.log" 2>&1) || {
        tail -30 "$work/packer.log" >&2
        exit 1
    }
    t2=$(now)
    imgbuild_total=$(echo "$imgbuild_total + $t1 - $t0" | bc)
    packer_total=$(echo "$packer_total + $t2 - $t1" | bc)
    printf 'run %d: imgbuild %.1fs, packer %.1fs\n' "$i" "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)"
done
printf 'mean over %d run(s): imgbuild %.1fs, packer %.1fs, ratio imgbuild/packer = %.2f\n' "$runs" \
    "$(echo "$imgbuild_total / $runs" | bc -l)" "$(echo "$packer_total / $runs" | bc -l)" \
    "$(echo "$imgbuild_total / $packer_total" | bc -l)"
