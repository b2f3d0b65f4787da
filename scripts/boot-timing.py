# Prints each console line of `giantvm run --config CFG --timeout S --stats` with the seconds
# since start (docs/boot.md measurements).
# Usage: python3 scripts/boot-timing.py CFG SECONDS [path/to/giantvm]
import subprocess, sys, time

cfg, timeout = sys.argv[1], sys.argv[2]
binary = sys.argv[3] if len(sys.argv) > 3 else ".build/debug/giantvm"
t0 = time.time()
p = subprocess.Popen([binary, "run", "--config", cfg, "--timeout", timeout, "--stats"],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
for line in p.stdout:
    print(f"{time.time() - t0:7.2f}s {line.decode(errors='replace').rstrip()[:200]}", flush=True)
p.wait()
print("exit", p.returncode, f"{time.time() - t0:.1f}s")
