#!/bin/sh
# Prints what a host-side (shell-local) step can see of the build.
set -eu
echo "build ${IMGBUILD_BUILD_NAME} ${IMGBUILD_BUILD_VERSION:-auto} id ${IMGBUILD_BUILD_ID}"
echo "work dir: ${IMGBUILD_WORK_DIR}"
if [ "${SHOW:-}" = uname ]; then uname -sr; fi
