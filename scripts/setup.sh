#!/usr/bin/env bash
# Installs what imgbuild and its tests need on Debian 12 (idempotent; quick
# when everything is there). Run as root or with sudo available.
set -euo pipefail

sudo_if_needed() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

packages=(
    # QEMU: the builder and qemu-img for disks and export.
    qemu-system-x86 ovmf
    # The test fixture (tests/fixtures/build-base-image.sh) is made from Debian packages with these.
    binutils cpio gzip xz-utils fdisk dosfstools mtools syslinux syslinux-common e2fsprogs util-linux
    # ... and the installer ISO fixture (tests/fixtures/build-installer-iso.sh) with xorriso.
    xorriso
    # A real sshd for the communicator tests, and the ssh client for --on-error abort checks.
    openssh-server openssh-sftp-server openssh-client
    python3 python3-venv git ca-certificates jq
    # verify probes are tested through a busybox-only userland, like the guest image.
    busybox
    # GNU time (/usr/bin/time -v) for scripts/bench-s3-rss.sh.
    time
    # zstd: QEMU machine checkpoints are saved and restored through it.
    zstd
)

# Python tools the tests use as real consumers and servers, in a private venv.
setup_venv() {
    local venv=${IMGBUILD_VENV:-$HOME/.cache/imgbuild-venv}
    local wanted="junitparser==3.2.0 check-jsonschema==0.29.4 prometheus-client==0.21.1"
    if [[ -f $venv/.installed && $(cat "$venv/.installed") == "$wanted" ]]; then
        return
    fi
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q $wanted
    echo "$wanted" > "$venv/.installed"
}

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
need_qemu_img=0
command -v qemu-img >/dev/null 2>&1 || need_qemu_img=1
# moto (S3 and EC2 API server) for the AWS tests, pinned in scripts/moto-server.sh.
setup_moto() {
    "$(dirname "$0")/moto-server.sh" install
}

if ((${#missing[@]} == 0 && need_qemu_img == 0)); then
    setup_venv
    setup_moto
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
sudo_if_needed apt-get update -q
# qemu-system-x86 and qemu-utils must come from the same release in one
# command: a newer preinstalled qemu-utils otherwise blocks the install, and
# installing qemu-system-x86 alone can remove qemu-img.
qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
sudo_if_needed apt-get install -y -q --no-install-recommends --allow-downgrades \
    "${missing[@]}" qemu-system-x86 "qemu-utils=${qemu_version}"
command -v qemu-img >/dev/null && command -v qemu-system-x86_64 >/dev/null
sudo_if_needed mkdir -p /run/sshd
setup_venv
setup_moto
