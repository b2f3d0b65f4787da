#!/usr/bin/env bash
# Installs giantvm for use and for writing plugins out of tree:
#
#   PREFIX/bin/giantvm
#   PREFIX/lib/giantvm/plugins/lib*.so          every in-tree plugin (test fixtures excluded); the
#                                               installed giantvm finds them by name
#   PREFIX/include/giantvm/giantvm_plugin.h     the plugin ABI, and the duration/size grammar
#   PREFIX/include/giantvm/giantvm_units.h
#   PREFIX/lib/libgiantvm-plugin.a              the grammar's implementation (units.c)
#   PREFIX/lib/pkgconfig/giantvm-plugin.pc      pkg-config --cflags --libs giantvm-plugin
#   PREFIX/share/giantvm/GiantVM/               a SwiftPM package with this package's PluginKit
#                                               product, for Swift plugins (templates/coherence-swift)
#   PREFIX/share/giantvm/templates/             templates/coherence-c and templates/coherence-swift
#
# Usage: scripts/install.sh [--release] [--no-build] [--bin-dir DIR] PREFIX
#   --release   build with -c release (default: the debug build, as `swift build` makes it)
#   --no-build  do not run swift build; install what DIR (or the build's bin path) holds
#   --bin-dir   where the built products are (default: `swift build --show-bin-path`)
set -euo pipefail
cd "$(dirname "$0")/.."
config=debug build=1 bin=
while [ $# -gt 1 ]; do
    case "$1" in
    --release) config=release ;;
    --no-build) build=0 ;;
    --bin-dir) bin=$2; shift ;;
    *) echo "install: unknown option '$1' (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
    shift
done
[ $# -eq 1 ] || { echo "usage: scripts/install.sh [--release] [--no-build] [--bin-dir DIR] PREFIX" >&2; exit 2; }
mkdir -p "$1"
prefix=$(cd "$1" && pwd)

if [ "$build" = 1 ]; then
    echo "== swift build -c $config"
    set +e
    swift build -c "$config" 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\] '
    status=${PIPESTATUS[0]}
    set -e
    [ "$status" = 0 ] || { echo "install: swift build failed (exit $status)" >&2; exit 1; }
fi
[ -n "$bin" ] || bin=$(swift build -c "$config" --show-bin-path)
[ -x "$bin/giantvm" ] || { echo "install: no giantvm in '$bin': build it first (swift build)" >&2; exit 1; }

echo "== installing into $prefix"
install -d "$prefix/bin" "$prefix/lib/giantvm/plugins" "$prefix/include/giantvm" "$prefix/lib/pkgconfig" \
    "$prefix/share/giantvm"
install -m 755 "$bin/giantvm" "$prefix/bin/giantvm"
n=0
for so in "$bin"/lib*.so; do
    case "$(basename "$so")" in libtest-*) continue ;; esac
    install -m 755 "$so" "$prefix/lib/giantvm/plugins/"
    n=$((n + 1))
done
install -m 644 Sources/PluginAPI/include/giantvm_plugin.h Sources/PluginAPI/include/giantvm_units.h "$prefix/include/giantvm/"

# The grammar of durations and sizes (giantvm_units.h) as a static archive a plugin links.
obj=$(mktemp -d)
trap 'rm -rf "$obj"' EXIT
${CC:-cc} -std=c11 -O2 -fPIC -I Sources/PluginAPI/include -c Sources/PluginAPI/units.c -o "$obj/units.o"
rm -f "$prefix/lib/libgiantvm-plugin.a"
ar rcs "$prefix/lib/libgiantvm-plugin.a" "$obj/units.o"

version=$("$bin/giantvm" --version 2>/dev/null || echo 0.0.0)
abi=$(sed -n 's/^#define GVM_ABI_VERSION \([0-9]*\)u.*/\1/p' Sources/PluginAPI/include/giantvm_plugin.h)
cat > "$prefix/lib/pkgconfig/giantvm-plugin.pc" <<PC
# GiantVM plugin development: the plugin ABI header (ABI $abi) and its units grammar.
prefix=$prefix
includedir=\${prefix}/include/giantvm
libdir=\${prefix}/lib
plugindir=\${prefix}/lib/giantvm/plugins
giantvm=\${prefix}/bin/giantvm
abi=$abi

Name: giantvm-plugin
Description: Build GiantVM plugins (transport, coherence, device) against the installed ABI header
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lgiantvm-plugin
PC

# PluginKit for Swift plugins: this package's PluginAPI and PluginKit targets, as a package of
# their own (no other dependency), named GiantVM like this one.
pkg="$prefix/share/giantvm/GiantVM"
rm -rf "$pkg"
install -d "$pkg/Sources"
cp -Rp Sources/PluginAPI Sources/PluginKit "$pkg/Sources/"
cat > "$pkg/Package.swift" <<'SWIFT'
// swift-tools-version:6.0
// Installed by GiantVM's scripts/install.sh: the PluginKit product (and the C ABI it wraps) for
// plugins written in Swift out of tree. See share/giantvm/templates/coherence-swift.
import PackageDescription

let package = Package(
    name: "GiantVM",
    products: [.library(name: "PluginKit", targets: ["PluginKit"])],
    targets: [
        .target(name: "PluginAPI", path: "Sources/PluginAPI"),
        .target(name: "PluginKit", dependencies: ["PluginAPI"], path: "Sources/PluginKit"),
    ],
    swiftLanguageModes: [.v5]
)
SWIFT

rm -rf "$prefix/share/giantvm/templates"
install -d "$prefix/share/giantvm/templates"
for t in coherence-c coherence-swift; do
    (cd templates && tar --exclude=.build --exclude='*.so' --exclude='*.json' -cf - "$t") | tar -xf - -C "$prefix/share/giantvm/templates"
done

echo "installed giantvm $version (plugin ABI $abi): $n plugins in $prefix/lib/giantvm/plugins"
echo "  C plugins:     PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs giantvm-plugin"
echo "  Swift plugins: GIANTVM_PACKAGE=$pkg swift build   (templates/coherence-swift)"
