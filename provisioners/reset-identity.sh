#!/bin/sh
# Makes an image safe to clone: every instance started from it must get its
# own machine-id, SSH host keys and cloud-init run. Run it last.
# Works on systemd and non-systemd guests; needs only POSIX sh.
set -eu

# An empty machine-id (not a missing file) makes systemd generate a new one at boot.
if [ -e /etc/machine-id ]; then
    : > /etc/machine-id
fi
rm -f /var/lib/dbus/machine-id

# New host keys on first boot (cloud-init or the distribution's sshd unit makes them).
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub

# Forget this instance so cloud-init treats the next boot as a first boot.
if command -v cloud-init >/dev/null 2>&1; then
    cloud-init clean --logs || true
fi
rm -rf /var/lib/cloud/instance /var/lib/cloud/instances /var/lib/cloud/data 2>/dev/null || true

# Build-time traces.
rm -f /root/.bash_history /root/.ash_history
: > /var/log/wtmp 2>/dev/null || true
echo "identity reset: machine-id, SSH host keys and cloud-init state cleared"
