# Prints each console line of `giantvm run --config CFG --timeout S --stats` with the seconds since start.
# Usage: python3 scripts/boot-timing.py CFG SECONDS
import subprocess,time,sys
cfg=sys.argv[1]; to=sys.argv[2]
t0=time.time()
p=subprocess.Popen(['sys.argv[3] if len(sys.argv) > 3 else ".build/debug/giantvm"','run','--config',cfg,'--timeout',to,'--stats'],stdout=subprocess.PIPE,stderr=subprocess.STDOUT)
for line in p.stdout:
    print(f"{time.time()-t0:7.2f}s {line.decode(errors='replace').rstrip()[:200]}", flush=True)
p.wait()
print("exit", p.returncode, f"{time.time()-t0:.1f}s")
