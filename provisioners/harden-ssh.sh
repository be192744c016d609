#!/bin/sh
# Hardens sshd for a golden image: keys only, no root password logins,
# no forwarding. Keeps the current session working (key-based root stays allowed).
set -eu
config=/etc/ssh/sshd_config
[ -f "$config" ] || { echo "no $config; nothing to harden"; exit 0; }

set_option() {
    # Replace an existing (possibly commented) line or append one.
    if grep -Eq "^[#[:space:]]*$1[[:space:]]" "$config"; then
        sed -i -E "s|^[#[:space:]]*$1[[:space:]].*|$1 $2|" "$config"
    else
        printf '%s %s\n' "$1" "$2" >> "$config"
    fi
}
set_option PasswordAuthentication no
set_option PermitRootLogin prohibit-password
set_option KbdInteractiveAuthentication no
set_option X11Forwarding no
set_option AllowTcpForwarding no
set_option MaxAuthTries 3
echo "sshd hardened: $(grep -Ec '^(PasswordAuthentication|PermitRootLogin|X11Forwarding) ' "$config") options set"
