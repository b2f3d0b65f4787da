#!/usr/bin/env bash
# Slurm for the `srun ... giantvm node --id auto` test (Tests/LaunchTests/SlurmTests.swift):
# Debian's slurm-wlm (slurmctld, slurmd, srun) and munge (its authentication daemon).
# Installs only; the test writes its own slurm.conf and starts and stops the daemons itself.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v srun >/dev/null \
    && command -v munged >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "slurm.sh: not root; skipping the install (the Slurm test will skip)"
    exit 0
fi
echo "installing slurm-wlm and munge (the Slurm launch test)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
# The Debian packages may start their services at install time in a system with an init; the test
# runs its own daemons with its own config, so stop any that were started here.
for svc in slurmd slurmctld munge; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done
