#!/bin/sh
# Applies pending package updates with whichever package manager the guest
# has, non-interactively, and cleans the package cache to keep the image small.
set -eu
if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get -y -q -o Dpkg::Options::=--force-confold dist-upgrade
    apt-get -y autoremove --purge
    apt-get clean
elif command -v dnf >/dev/null 2>&1; then
    dnf -y upgrade --refresh && dnf clean all
elif command -v apk >/dev/null 2>&1; then
    apk upgrade --no-cache
else
    echo "no supported package manager (apt-get, dnf, apk); nothing to upgrade"
fi
