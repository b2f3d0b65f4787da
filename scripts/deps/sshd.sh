#!/usr/bin/env bash
# Test dependency of `giantvm up --ssh` (Tests/SSHLaunchTests): Debian's OpenSSH server and client.
# The test runs its own sshd (`/usr/sbin/sshd -D -f CONFIG`) inside network namespaces with keys it
# makes; nothing here starts, enables or configures the system's ssh service.
set -euo pipefail
if [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else
        echo "sshd.sh: not root and no sudo: the ssh launch tests will skip (install openssh-server openssh-client)"
        exit 0
    fi
else SUDO=; fi
echo "== installing openssh-server openssh-client (sshd per network namespace for the up --ssh tests)"
# Keep the package from starting the system's sshd on port 22 (a policy-rc.d answering 101 tells
# invoke-rc.d "not allowed"); an existing policy is left as it is.
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    made_policy=1
fi
status=0
$SUDO apt-get update -qq || status=$?
if [ "$status" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null || status=$?
fi
if [ -n "$made_policy" ]; then $SUDO rm -f "$policy"; fi
exit "$status"
