#!/usr/bin/env bash
# Stage the netfilter tools node-local mode runs into a root folder for the distroless image:
# iptables and ip6tables in both flavours (legacy and nft, with their -save tools for the
# `rules: auto` choice) and nft, with every shared library they load and the xtables
# extensions (comment, socket, NOTRACK, ...). Run in the Debian build stage, after
# `apt-get install iptables nftables`:
#
#   scripts/image-netfilter-tools.sh /out/netfilter     # then: COPY --from=build /out/netfilter/ /
set -euo pipefail
dest=${1:?usage: image-netfilter-tools.sh DEST}
mkdir -p "$dest/usr/sbin"
multi=(/usr/sbin/xtables-legacy-multi /usr/sbin/xtables-nft-multi /usr/sbin/nft)
for b in "${multi[@]}"; do
  cp -a "$b" "$dest/usr/sbin/"
done
# The names clusterdns calls are links to the two multi-call binaries (as Debian installs them,
# without the alternatives system the image does not have).
for flavour in legacy nft; do
  for tool in iptables ip6tables iptables-save ip6tables-save; do
    base=${tool%-save}
    name="$base-$flavour${tool#"$base"}"
    ln -sf "xtables-$flavour-multi" "$dest/usr/sbin/$name"
  done
done
ln -sf xtables-nft-multi "$dest/usr/sbin/iptables"
ln -sf xtables-nft-multi "$dest/usr/sbin/ip6tables"
# Shared libraries, resolved by the loader itself, at their own paths.
for b in "${multi[@]}" /usr/lib/*/xtables/*.so; do
  ldd "$b" | awk '/=> \//{print $3} /^\t\/.*ld-linux/{print $1}'
done | sort -u | while read -r lib; do
  mkdir -p "$dest$(dirname "$lib")"
  cp -aL "$lib" "$dest$lib"
done
# The xtables extensions iptables loads at run time.
xt=$(dirname "$(ls /usr/lib/*/xtables/libxt_comment.so)")
mkdir -p "$dest$xt"
cp -a "$xt/." "$dest$xt/"
# iptables-legacy locks here; the DaemonSet mounts the node's lock over it.
mkdir -p "$dest/run"
echo "staged: $(find "$dest" -type f | wc -l) files, $(du -sh "$dest" | cut -f1)" >&2
