#!/bin/sh
# Prints what a host-side (shell-local) step can see of the build.
set -eu
echo "build ${IMGBUILD_BUILD_NAME} ${IMGBUILD_BUILD_VERSION:-auto} id ${IMGBUILD_BUILD_ID}"
echo "build dir: ${IMGBUILD_BUILD_DIR}"
if [ "${SHOW:-}" = uname ]; then uname -sr; fi
