#!/usr/bin/env bash
# The out-of-tree template test (CLITests/TemplateTests) builds templates/coherence-c with make, cc
# and pkg-config against an installed giantvm.
set -euo pipefail
need=()
for pkg in pkg-config make gcc; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
