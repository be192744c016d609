#!/bin/sh
# Runs in the guest with variables from the template's `env` block; values
# with quotes, `$` and `;` arrive exactly as written.
set -eu
mkdir -p /etc/imgbuild
printf '%s\n' "$GREETING" > /etc/imgbuild/greeting
printf '%s\n' "$TRICKY" > /etc/imgbuild/tricky
echo "configured $(hostname) for ${ROLE}"
