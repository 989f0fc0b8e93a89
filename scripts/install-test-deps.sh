#!/usr/bin/env bash
# Install what the tests use, from Debian's packages, only where missing: dig/nslookup
# (dnsutils), kdig (knot-dnsutils), knotd, named (bind9) and unbound (real upstreams, peers and
# zone-transfer secondaries; openssl makes the DNS-over-TLS test's certificates), dnsperf
# (load), prometheus and promtool (metrics tests), kubectl (`kubectl kustomize` of manifests/;
# Debian's package is kubernetes-client), python3 (benches/load.py readme --check), jq.
# Idempotent; quiet when all is there. A test whose tool is missing fails (it never skips),
# naming the package. Also iptables (legacy and nft) and nft (node-local mode's rules).
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have dig       || need+=(dnsutils)
have nslookup  || need+=(dnsutils)
have kdig      || need+=(knot-dnsutils)
have knotd     || need+=(knot)
have named     || need+=(bind9)
have unbound   || need+=(unbound)
have openssl   || need+=(openssl)
have dnsperf   || need+=(dnsperf)
have prometheus || need+=(prometheus)
have promtool  || need+=(prometheus)
have kubectl   || need+=(kubernetes-client)
have python3   || need+=(python3)
have jq        || need+=(jq)
have iptables-legacy || need+=(iptables)
have iptables-nft    || need+=(iptables)
have nft       || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing: ${need[*]}" >&2
  # Never let the packages start their system services (knot/unbound/named would take port 53,
  # prometheus 9090): the tests start their own on loopback ports.
  guard=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d; guard=1
  fi
  rc=0
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null; } || rc=$?
  [ "$guard" = 1 ] && $sudo rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || { echo "install-test-deps: apt-get failed" >&2; exit 1; }
fi
# Debian starts these daemons on install; the tests start their own on loopback ports.
for svc in knot named unbound prometheus; do
  (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || true
done
