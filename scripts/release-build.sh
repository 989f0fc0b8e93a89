#!/bin/sh
# The release build that the container image ships, run the same way by the Dockerfile, by CI and
# by the tests (tests/it/manifests.rs): one place for the cargo flags.
#
#   scripts/release-build.sh [OUT_DIR]      (default: target/image)
#
# It builds the glibc binary for the host target (x86_64-unknown-linux-gnu), checks that it needs
# nothing beyond what gcr.io/distroless/cc-debian12 holds (glibc 2.36 and libgcc_s), and writes
# OUT_DIR/clusterdns with the debug info stripped (symbols kept, so panics still name functions).
# CARGO_TARGET_DIR is honoured.
set -eu

cd "$(dirname "$0")/.."
out="${1:-target/image}"
target_dir="${CARGO_TARGET_DIR:-target}"

# The runtime image's glibc (Debian 12 bookworm): the binary may not ask for newer symbols.
max_glibc="2.36"
# What distroless/cc-debian12 provides.
allowed_libs="libc.so.6 libm.so.6 libgcc_s.so.1 libpthread.so.0 libdl.so.2 librt.so.1 ld-linux-x86-64.so.2"

host="$(rustc -vV | sed -n 's/^host: //p')"
if [ "$host" != "x86_64-unknown-linux-gnu" ]; then
    echo "release-build: host target is $host; the image is built for x86_64-unknown-linux-gnu" >&2
    exit 1
fi

cargo build --release --locked --bin clusterdns

bin="$target_dir/release/clusterdns"
[ -x "$bin" ] || { echo "release-build: $bin was not built" >&2; exit 1; }

# Shared libraries: only what the runtime image has.
for lib in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    case " $allowed_libs " in
        *" $lib "*) ;;
        *) echo "release-build: $bin needs $lib, which distroless/cc-debian12 does not have" >&2; exit 1 ;;
    esac
done

# glibc symbol versions: none newer than the runtime's.
newest="$(readelf -V "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -t. -k1,1n -k2,2n -k3,3n | tail -n1)"
if [ -n "$newest" ]; then
    top="$(printf '%s\n%s\n' "$newest" "$max_glibc" | sort -t. -k1,1n -k2,2n -k3,3n | tail -n1)"
    if [ "$top" != "$max_glibc" ]; then
        echo "release-build: $bin needs GLIBC_$newest, newer than the runtime's $max_glibc: build on Debian 12 (rust:*-bookworm)" >&2
        exit 1
    fi
fi

mkdir -p "$out"
objcopy --strip-debug "$bin" "$out/clusterdns.tmp"
mv "$out/clusterdns.tmp" "$out/clusterdns"
echo "release-build: $out/clusterdns (glibc <= ${newest:-none}, $(wc -c < "$out/clusterdns") bytes)"
