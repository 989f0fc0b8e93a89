#!/usr/bin/env python3
"""Convert the cluster.local zone made by the shared gen_zone.py into a clusterdns objects file.

The output is a `kind: List` of Kubernetes objects in the `kubectl get -o yaml` shape that makes
clusterdns serve exactly the records of the zone file, so that clusterdns and an authoritative
peer (knot, bind) serving the zone file can be measured on the same data:

  * `<svc>.<ns>.svc.<zone>` with one A record and SRV records whose target is the service name
    -> a ClusterIP Service: spec.clusterIP(s) = that address, one port per `_<name>._<proto>` SRV
  * `<svc>.<ns>.svc.<zone>` with per-endpoint host names `<host>.<svc>.<ns>.svc.<zone>` (A)
    and SRV records per port per endpoint -> a headless Service (`clusterIP: None`) and one
    discovery.k8s.io/v1 EndpointSlice with those addresses (ready), `hostname` only where the
    host label is not the dashed IP (clusterdns names the others after their dashed IP), and
    the SRV ports
  * every namespace that appears in a service name -> a Namespace
  * kube-dns.kube-system (whose ClusterIP clusterdns answers for ns.dns.<zone>) and
    default/kubernetes come out of the same rules; the SOA, NS, ns.dns and dns-version
    records are made by clusterdns itself, and the 10.in-addr.arpa PTR records from the
    services' and endpoints' addresses.

Consistency problems (records this mapping cannot express, PTRs that do not match the forward
records) are printed as warnings on stderr and make the exit status 1.

Usage: zone_to_objects.py ZONE_DIR_OR_FILE [--zone cluster.local] [--out objects.yaml]

That the two servers then answer alike is checked by load.py before every measurement
(verify.py: every distinct query of every query file, all sections compared).
Only the Python 3 standard library.
"""
import argparse
import json
import os
import sys


def q(s):
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(s)


def dashed(ip):
    return ip.replace(".", "-")


def read_zone(path):
    """Yield (owner, ttl, type, rdata) of a gen_zone.py master file: one record per line,
    absolute owner names, `owner ttl IN type rdata`."""
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line[0] in ";$":
                continue
            parts = line.split(None, 4)
            if len(parts) < 5 or parts[2].upper() != "IN":
                raise SystemExit(f"{path}:{n}: not `owner ttl IN type rdata`: {line.strip()}")
            owner, ttl, _, rtype, rdata = parts
            yield owner.lower(), int(ttl), rtype.upper(), rdata.strip()


def convert(zone_file, zone, reverse_file=None):
    """Return (yaml_text, stats, warnings)."""
    apex = zone.rstrip(".").lower() + "."
    suffix = ".svc." + apex
    warn = []
    svcs = {}      # (ns, svc) -> {"a": [ip], "hosts": {label: [ip]}, "srv": {(name, proto): [(w, port, target)]}}
    ttls = set()
    other = {}     # (owner, type) -> [rdata] for the records outside svc

    def svc_entry(ns, name):
        return svcs.setdefault((ns, name), {"a": [], "hosts": {}, "srv": {}})

    for owner, ttl, rtype, rdata in read_zone(zone_file):
        ttls.add(ttl)
        if not owner.endswith(suffix):
            other.setdefault((owner, rtype), []).append(rdata)
            continue
        labels = owner[: -len(suffix)].split(".")
        if len(labels) == 2 and rtype == "A":
            svc_entry(labels[1], labels[0])["a"].append(rdata)
        elif len(labels) == 3 and rtype == "A" and not labels[0].startswith("_"):
            svc_entry(labels[2], labels[1])["hosts"].setdefault(labels[0], []).append(rdata)
        elif len(labels) == 4 and rtype == "SRV" and labels[0].startswith("_") and labels[1].startswith("_"):
            prio, weight, port, target = rdata.split()
            if prio != "0":
                warn.append(f"{owner}: SRV priority {prio} (clusterdns always writes 0)")
            e = svc_entry(labels[3], labels[2])
            e["srv"].setdefault((labels[0][1:], labels[1][1:]), []).append(
                (int(weight), int(port), target.lower()))
        else:
            warn.append(f"{owner} {rtype}: no Kubernetes object makes this record")

    # Records clusterdns makes itself: check they agree with the zone.
    kd = svcs.get(("kube-system", "kube-dns"))
    ns_a = sorted(other.pop((f"ns.dns.{apex}", "A"), []))
    if kd and ns_a and sorted(kd["a"]) != ns_a:
        warn.append(f"ns.dns.{apex} A {ns_a} is not the kube-dns ClusterIP {kd['a']}")
    ver = other.pop((f"dns-version.{apex}", "TXT"), [])
    if ver and ver != ['"1.1.0"']:
        warn.append(f"dns-version TXT {ver}: clusterdns answers \"1.1.0\"")
    other.pop((apex, "SOA"), None)
    other.pop((apex, "NS"), None)
    for (owner, rtype), rd in sorted(other.items()):
        warn.append(f"{owner} {rtype} {rd}: outside <svc>.<ns>.svc.{apex}, not expressible")
    if len(ttls) > 1:
        warn.append(f"several TTLs {sorted(ttls)}: clusterdns has one (cluster.ttl)")

    items = []
    namespaces = sorted({ns for ns, _ in svcs})
    for ns in namespaces:
        items.append(f"- {{apiVersion: v1, kind: Namespace, metadata: {{name: {q(ns)}}}}}")
    n_cip = n_hl = n_ep = 0
    reverse = {}   # ip -> expected PTR target
    for (ns, name), e in sorted(svcs.items()):
        fq = f"{name}.{ns}{suffix}"
        ports = []   # (name, proto, port)
        for (pname, proto), recs in sorted(e["srv"].items()):
            nums = sorted({p for _, p, _ in recs})
            if len(nums) != 1:
                warn.append(f"_{pname}._{proto}.{fq}: several port numbers {nums}; using {nums[0]}")
            ports.append((pname, proto.upper(), nums[0]))
        port_yaml = "[" + ", ".join(
            f"{{name: {q(p)}, port: {n}, protocol: {pr}}}" for p, pr, n in ports) + "]"
        targets = {t for recs in e["srv"].values() for _, _, t in recs}
        headless = bool(e["hosts"]) or len(e["a"]) > 1 or (targets and targets != {fq})
        if not headless:
            if len(e["a"]) != 1:
                warn.append(f"{fq}: {len(e['a'])} A records and no endpoint names; skipped")
                continue
            ip = e["a"][0]
            # one address, one port per `_port._proto` name: clusterdns writes weight 100
            if any(w != 100 for recs in e["srv"].values() for w, _, _ in recs):
                warn.append(f"SRV of {fq}: weights other than 100, clusterdns writes 100")
            items.append(
                f"- {{apiVersion: v1, kind: Service, metadata: {{name: {q(name)}, namespace: {q(ns)}}}, "
                f"spec: {{type: ClusterIP, clusterIP: {ip}, clusterIPs: [{ip}], ports: {port_yaml}}}}}")
            reverse[ip] = fq
            n_cip += 1
            continue
        # headless: endpoints from the host names
        eps = []    # (ip, hostname or None)
        host_ips = []
        for host, ips in sorted(e["hosts"].items()):
            for ip in ips:
                eps.append((ip, None if host == dashed(ip) else host))
                host_ips.append(ip)
                reverse[ip] = f"{host}.{fq}"
        if sorted(host_ips) != sorted(e["a"]):
            warn.append(f"{fq}: service A {sorted(e['a'])} differ from its endpoints' {sorted(host_ips)}")
        want_targets = {f"{h}.{fq}" for h in e["hosts"]}
        if targets and targets != want_targets:
            warn.append(f"{fq}: SRV targets {sorted(targets - want_targets)[:3]} are not endpoint names")
        for (pname, proto), recs in e["srv"].items():
            for w, _, _ in recs:
                # clusterdns (as CoreDNS) answers `_port._proto` with weight 100 / (endpoints x 1)
                if w != max(1, 100 // len(eps)):
                    warn.append(f"_{pname}._{proto}.{fq}: SRV weight {w}, clusterdns writes "
                                f"{max(1, 100 // len(eps))}")
                    break
        ep_yaml = "\n".join(
            f"  - {{addresses: [{ip}], " + (f"hostname: {q(h)}, " if h else "") + "conditions: {ready: true}}"
            for ip, h in eps)
        items.append(
            f"- {{apiVersion: v1, kind: Service, metadata: {{name: {q(name)}, namespace: {q(ns)}}}, "
            f"spec: {{clusterIP: None, clusterIPs: [None], ports: {port_yaml}}}}}")
        items.append(
            "- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n"
            f"  metadata: {{name: {q(name + '-bench')}, namespace: {q(ns)}, "
            f"labels: {{kubernetes.io/service-name: {q(name)}}}}}\n"
            "  addressType: IPv4\n  endpoints:\n" + ep_yaml + "\n"
            f"  ports: {port_yaml}")
        n_hl += 1
        n_ep += len(eps)

    if reverse_file and os.path.exists(reverse_file):
        seen = set()
        for owner, _, rtype, rdata in read_zone(reverse_file):
            if rtype != "PTR":
                continue
            octets = owner[: -len(".in-addr.arpa.")].split(".")
            ip = ".".join(reversed(octets))
            seen.add(ip)
            if reverse.get(ip) != rdata.lower():
                warn.append(f"PTR {ip} -> {rdata}: the objects give {reverse.get(ip)}")
        missing = set(reverse) - seen
        if missing:
            warn.append(f"{len(missing)} addresses have no PTR in {reverse_file}, e.g. {sorted(missing)[:3]}")

    text = ("# generated by benches/zone_to_objects.py from " + os.path.basename(zone_file) + "\n"
            "apiVersion: v1\nkind: List\nitems:\n" + "\n".join(items) + "\n")
    stats = {"namespaces": len(namespaces), "clusterip_services": n_cip,
             "headless_services": n_hl, "endpoints": n_ep,
             "ttl": min(ttls) if ttls else 30}
    return text, stats, warn


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("zone", nargs="?", help="gen_zone.py output directory, or its <zone>.zone file")
    ap.add_argument("--zone", dest="name", default="cluster.local", help="cluster domain")
    ap.add_argument("--out", help="objects file to write (default: stdout)")
    a = ap.parse_args()
    if not a.zone:
        ap.error("a zone directory or file is needed")
    zdir = a.zone if os.path.isdir(a.zone) else os.path.dirname(a.zone) or "."
    zfile = os.path.join(a.zone, f"{a.name}.zone") if os.path.isdir(a.zone) else a.zone
    text, stats, warn = convert(zfile, a.name, os.path.join(zdir, "10.in-addr.arpa.zone"))
    for w in warn[:50]:
        print(f"zone_to_objects: warning: {w}", file=sys.stderr)
    if len(warn) > 50:
        print(f"zone_to_objects: ... {len(warn) - 50} more warnings", file=sys.stderr)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    print(" ".join(f"{k}={v}" for k, v in stats.items()) + f" warnings={len(warn)}", file=sys.stderr)
    return 1 if warn else 0


if __name__ == "__main__":
    sys.exit(main())
