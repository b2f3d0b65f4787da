#!/usr/bin/env python3
"""Prints, one per line, the swiftc arguments SwiftPM used to compile MODULE (read from the debug
build's manifest, .build/debug.yaml): search paths, clang module maps, defines, language mode,
package name, and the module's own source list (@file). Fuzz/run.sh recompiles that module with
these arguments plus -sanitize=fuzzer, so a fuzzer follows the package however its files move.

usage: swiftc-args.py BUILD_DIR MODULE
"""
import json
import os
import sys

build, module = sys.argv[1], sys.argv[2]
manifest = os.path.join(build, "debug.yaml")
needle = '"-module-name","%s",' % module
args = None
with open(manifest) as f:
    for line in f:
        s = line.strip()
        if s.startswith("args: [") and needle in s and '"-emit-module"' in s:
            args = json.loads(s[len("args: "):])
            break
if args is None:
    sys.exit("swiftc-args.py: no compile command for module %s in %s (run `swift build` first)" % (module, manifest))

keep_pairs = {"-I", "-Xcc", "-package-name", "-swift-version"}
out = []
i = 0
while i < len(args):
    a = args[i]
    if a in keep_pairs and i + 1 < len(args):
        out += [a, args[i + 1]]
        i += 2
        continue
    if a.startswith("-D"):
        out.append(a)
    elif a.startswith("@") and a.endswith("/sources"):
        out.append(a)  # the module's source list, as SwiftPM wrote it
    elif a == "-Xfrontend" and i + 1 < len(args) and args[i + 1] == "-enable-cross-import-overlays":
        out += [a, args[i + 1]]
        i += 2
        continue
    i += 1
print("\n".join(out))
