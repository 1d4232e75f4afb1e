"""``python -m servelab.platform.limits``: what this machine enforces."""

from servelab.platform.limits import ResourceLimits, detect

found = detect()
print(f"mode:   {found.mode}\nroot:   {found.root}\nreason: {found.reason}\n")
print(f"{'memory_mb':>9}  {'vCPUs':>6}  {'threads':>7}")
for m in (128, 512, 1024, 1769, 3008, 10240):
    r = ResourceLimits.for_memory(m)
    print(f"{m:>9}  {r.cpus:>6.3f}  {r.threads:>7}")
