#!/usr/bin/env python3
"""Seed inputs for the fuzz corpora (run once; the fuzzers grow and `cargo fuzz cmin` trims).

    fuzz/seeds/make_seeds.py OUT_DIR

writes OUT_DIR/<target>/<name> for every target:

- query_path: real queries for the sample cluster's names (config/cluster.yaml, plus the
  40-endpoint `svc-0.team-0` the harness adds), forwarded and hosts-file names, EDNS variants
  (payload sizes, DO, version 1, cookie / client-subnet / padding options, two OPTs), compressed
  names, odd opcodes, classes, counts and flags.
- upstream_reply: replies captured from a real knotd on loopback to exactly the four client
  queries the harness sends (positive, then NXDOMAIN), each behind a control byte (see
  `src/fuzzing/upstream.rs`), plus hand-made hostile ones (pointer loops, huge counts, cut
  records, no question, another question, TC, SERVFAIL).
- config_file: config/*.yaml and small variations.
- corefile: every file under tests/fixtures/corefiles and a few syntax variations.
- objects_file: config/cluster.yaml and a few other shapes (typed lists, several documents).

Needs only python3 and knotd (scripts/install-test-deps.sh installs it).
"""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def name(n):
    out = b""
    for label in n.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "HINFO": 13, "MX": 15, "TXT": 16,
         "AAAA": 28, "SRV": 33, "OPT": 41, "DS": 43, "IXFR": 251, "AXFR": 252, "ANY": 255,
         "CAA": 257, "TYPE65534": 65534}


def opt(payload=1232, do=False, version=0, options=b"", owner=b"\0"):
    return owner + struct.pack(">HHBBHH", 41, payload, 0, version, 0x8000 if do else 0,
                               len(options)) + options


def query(qname, qtype="A", qid=0x2a2a, flags=0x0100, qclass=1, edns=None, raw_name=None,
          qd=1, extra=b"", counts=None):
    qn = raw_name if raw_name is not None else name(qname)
    t = TYPES[qtype] if isinstance(qtype, str) else qtype
    ar = 1 if edns is not None else 0
    an, ns = 0, 0
    if counts:
        qd, an, ns, ar = counts
    m = struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)
    m += qn + struct.pack(">HH", t, qclass)
    if edns is not None:
        m += edns
    return m + extra


def write(out, target, label, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + label), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- query_path

def query_seeds(out):
    z = "svc.cluster.local"
    names = [
        ("kubernetes.default." + z, "A"), ("kubernetes.default." + z, "AAAA"),
        ("web.demo." + z, "A"), ("web.demo." + z, "AAAA"), ("Web.DEMO.svc.Cluster.Local", "ANY"),
        ("db.demo." + z, "SRV"), ("_postgres._tcp.db.demo." + z, "SRV"), ("db-0.db.demo." + z, "A"),
        ("db.demo." + z, "A"), ("workers.demo." + z, "A"), ("_grpc._tcp.workers.demo." + z, "SRV"),
        ("search.demo." + z, "A"), ("search.demo." + z, "CNAME"), ("search.demo." + z, "AAAA"),
        ("kube-dns.kube-system." + z, "SRV"), ("_dns._udp.kube-dns.kube-system." + z, "SRV"),
        ("10-244-0-3.kube-system.pod.cluster.local", "A"), ("fd00--1.demo.pod.cluster.local", "AAAA"),
        ("10.0.96.10.in-addr.arpa", "PTR"), ("3.0.244.10.in-addr.arpa", "PTR"),
        ("a.0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa", "PTR"),
        ("ns.dns.cluster.local", "A"), ("cluster.local", "SOA"), ("cluster.local", "NS"),
        ("dns-version.cluster.local", "TXT"), ("nothere.demo." + z, "A"), ("demo." + z, "A"),
        ("svc-0.team-0." + z, "A"), ("_http._tcp.svc-0.team-0." + z, "SRV"),
        ("www.example.com.demo." + z, "A"), ("www.example.com", "A"), ("example.org", "MX"),
        ("gateway.example.internal", "A"), ("gateway", "A"), ("v6host.example.internal", "AAAA"),
        ("1.0.0.10.in-addr.arpa", "PTR"), ("10.2.0.192.in-addr.arpa", "PTR"),
        ("legacy-db.corp.example", "ANY"), (".", "NS"), ("cluster.local", "AXFR"),
        ("cluster.local", "IXFR"), ("web.demo." + z, "TYPE65534"), ("web.demo." + z, "CAA"),
    ]
    for i, (n, t) in enumerate(names):
        write(out, "query_path", f"{i:02d}-{t}-{n[:40]}", query(n, t, qid=i))
        write(out, "query_path", f"{i:02d}-{t}-edns-{n[:40]}", query(n, t, qid=i, edns=opt()))
    web = "web.demo." + z
    svc0 = "svc-0.team-0." + z
    variants = {
        "edns-512": query(svc0, edns=opt(512)),
        "edns-100": query(svc0, edns=opt(100)),
        "edns-4096-do": query(svc0, edns=opt(4096, do=True)),
        "edns-65535": query("_http._tcp." + svc0, "SRV", edns=opt(65535)),
        "edns-version1": query(web, edns=opt(version=1)),
        "edns-cookie": query(web, edns=opt(options=struct.pack(">HH", 10, 8) + b"\x01" * 8)),
        "edns-ecs": query("www.example.com", edns=opt(options=struct.pack(">HHHBB", 8, 7, 1, 24, 0) + b"\x0a\x00\x01")),
        "edns-padding-nsid": query(web, edns=opt(options=struct.pack(">HH", 12, 16) + b"\0" * 16 + struct.pack(">HH", 3, 0))),
        "two-opts": query(web, edns=opt() + opt(), counts=(1, 0, 0, 2)),
        "opt-not-root": query(web, edns=opt(owner=b"\xc0\x0c")),
        "opt-in-answer": query(web, edns=opt(), counts=(1, 1, 0, 0)),
        "class-ch": query("version.bind", "TXT", qclass=3),
        "class-any": query(web, qclass=255),
        "class-none": query(web, qclass=254),
        "qd0": query(web, counts=(0, 0, 0, 0)),
        "qd2": query(web, counts=(2, 0, 0, 0), extra=name(web) + b"\0\x01\0\x01"),
        "qr-set": query(web, flags=0x8100),
        "opcode-notify": query("cluster.local", "SOA", flags=0x2400),
        "opcode-update": query("cluster.local", "SOA", flags=0x2800),
        "opcode-iquery": query(web, flags=0x0900),
        "opcode-15": query(web, flags=0x7900),
        "tc-set": query(web, flags=0x0300),
        "cd-ad-z": query(web, flags=0x0170),
        "no-rd": query(web, flags=0),
        "mixed-case": query("KuBeRnEtEs.DeFaUlT.SvC.ClUsTeR.LoCaL"),
        "compressed-into-header": query(None, raw_name=b"\x03web\xc0\x02", qid=0x0464),
        "pointer-self": query(None, raw_name=b"\xc0\x0c"),
        "pointer-forward": query(None, raw_name=b"\xc0\x20"),
        "label-0x40": query(None, raw_name=b"\x41abc\0"),
        "name-too-long": query(None, raw_name=(b"\x3f" + b"a" * 63) * 4 + b"\0"),
        "name-255": query(None, raw_name=(b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"a" * 61 + b"\0"),
        "truncated-question": query(web)[:-3],
        "header-only": query(web)[:12],
        "runt": b"\x12\x34\x01",
        "answer-record-compressed": query(web, counts=(1, 1, 0, 1), edns=b"\xc0\x0c\0\x01\0\x01\0\0\0\x3c\0\x04\x0a\0\0\x01" + opt()),
        "trailing-garbage": query(web, edns=opt()) + b"\xde\xad\xbe\xef",
        "huge-arcount": query(web, counts=(1, 0, 0, 0xffff)),
        "binary-label": query(None, raw_name=b"\x04a\x00.b\x04demo\x03svc\x07cluster\x05local\x00"),
        "root-label-dot": query(None, raw_name=b"\x01.\x00"),
    }
    for k, v in variants.items():
        write(out, "query_path", k, v)


# ---------------------------------------------------------------- upstream_reply

CLIENT_NAMES = ["www.Example.COM.", "example.org.", "_sip._udp.Voip.example.", "mail.example.net."]

# The harness's four client queries (src/fuzzing/upstream.rs `client_query`), ID 0x1234.
CLIENTS = [
    query("www.Example.COM.", "A", qid=0x1234),
    query("example.org.", "AAAA", qid=0x1234, edns=opt(4096, do=True)),
    query("_sip._udp.Voip.example.", "SRV", qid=0x1234, flags=0x0110, edns=opt(700)),
    query("mail.example.net.", "MX", qid=0x1234,
          edns=opt(1400, options=bytes([0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]))),
]

ZONES = {
    "example.com": "www 60 IN CNAME web\nweb 60 IN A 192.0.2.1\nweb 60 IN A 192.0.2.2\n",
    "example.org": "@ 300 IN AAAA 2001:db8::1\n@ 300 IN AAAA 2001:db8::2\n@ IN MX 10 mx\n",
    "voip.example": "".join(f"_sip._udp 120 IN SRV {i} 5 5060 sip{i}.voip.example.\n"
                            f"sip{i} 120 IN A 198.51.100.{i}\n" for i in range(1, 40)),
    "example.net": "mail 600 IN MX 10 mx1.example.net.\nmail 600 IN MX 20 mx2.example.org.\n"
                   "mx1 600 IN A 203.0.113.5\n",
}


def knot_replies(positive):
    """Start knotd with the zones (or empty ones: NXDOMAIN), ask the four client queries over
    UDP and TCP, return the replies."""
    d = tempfile.mkdtemp()
    try:
        port = free_port()
        conf = f"server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\ndatabase:\n    storage: {d}\n" \
               "log:\n  - target: stderr\n    any: error\nzone:\n"
        for z, body in ZONES.items():
            soa = f"$ORIGIN {z}.\n$TTL 300\n@ 300 IN SOA ns.{z}. admin.{z}. 7 3600 600 86400 45\n@ IN NS ns\nns IN A 127.0.0.1\n"
            with open(os.path.join(d, z + ".zone"), "w") as f:
                f.write(soa + (body if positive else ""))
            conf += f"  - domain: {z}\n    file: {d}/{z}.zone\n"
        with open(os.path.join(d, "knot.conf"), "w") as f:
            f.write(conf)
        p = subprocess.Popen(["knotd", "-c", os.path.join(d, "knot.conf")],
                             stdout=subprocess.DEVNULL)
        try:
            out = []
            for q in CLIENTS:
                out.append((udp_ask(port, q), tcp_ask(port, q)))
            return out
        finally:
            p.kill()
            p.wait()
    finally:
        shutil.rmtree(d)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def udp_ask(port, q):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    for _ in range(50):
        s.sendto(q, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except socket.timeout:
            time.sleep(0.1)
    raise SystemExit("knotd does not answer")


def tcp_ask(port, q):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.sendall(struct.pack(">H", len(q)) + q)
    n = struct.unpack(">H", recv_exact(s, 2))[0]
    return recv_exact(s, n)


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise SystemExit("short TCP read")
        b += c
    return b


def upstream_seeds(out):
    for positive in (True, False):
        tag = "pos" if positive else "nx"
        for k, (u, t) in enumerate(knot_replies(positive)):
            write(out, "upstream_reply", f"knot-{tag}-q{k}-udp", bytes([k]) + u)
            write(out, "upstream_reply", f"knot-{tag}-q{k}-tcpclient", bytes([k | 0x04]) + t)
            write(out, "upstream_reply", f"knot-{tag}-q{k}-wrongid", bytes([k | 0x08]) + u)
            # Mode 2: the same reply with the question's case swapped (0x20 from upstream).
            qlen = len(name(CLIENT_NAMES[k])) + 4
            write(out, "upstream_reply", f"knot-{tag}-q{k}-case", bytes([k | 0x20]) + u[:12] + u[12 + qlen:])
    q0 = CLIENTS[0]
    qn = len(name("www.Example.COM.")) + 4
    hdr = lambda flags=0x8180, qd=1, an=0, ns=0, ar=0: struct.pack(">HHHHHH", 0x1234, flags, qd, an, ns, ar)
    a_rec = b"\xc0\x0c\0\x01\0\x01\0\0\x0e\x10\0\x04\xc0\x00\x02\x01"
    rest = {
        # mode 1: header from the seed, the client's question inserted, then the rest.
        "pointer-loop": hdr(an=1) + b"\xc0\x1d\xc0\x1b\0\x01\0\x01\0\0\0\x3c\0\x04\x01\x02\x03\x04",
        "pointer-self": hdr(an=1) + b"\xc0\x21\0\x01\0\x01\0\0\0\x3c\0\x04\x01\x02\x03\x04",
        "huge-counts": hdr(an=0xffff, ns=0xffff, ar=0xffff) + a_rec,
        "cut-record": hdr(an=2) + a_rec + a_rec[:9],
        "rdlen-past-end": hdr(an=1) + a_rec[:10] + b"\x01\x00" + b"\x01\x02",
        "a-rdlen-3": hdr(an=1) + a_rec[:10] + b"\0\x03\x01\x02\x03",
        "cname-elsewhere": hdr(an=2) + b"\xc0\x0c\0\x05\0\x01\0\0\0\x3c\0\x0d\x05other\x07example\0"
                           + b"\xc0\x2c\0\x01\0\x01\0\0\0\x3c\0\x04\x0a\x0a\x0a\x0a",
        "nxdomain-soa": hdr(flags=0x8183, ns=1) + b"\xc0\x10\0\x06\0\x01\0\0\x0e\x10\0\x16\0\0"
                        + struct.pack(">IIIII", 1, 2, 3, 4, 5),
        "nxdomain-short-soa": hdr(flags=0x8183, ns=1) + b"\xc0\x10\0\x06\0\x01\0\0\x0e\x10\0\x04\0\0\0\0",
        "nodata-no-soa": hdr(),
        "ttl-zero": hdr(an=1) + a_rec[:6] + b"\0\0\0\0" + a_rec[10:],
        "ttl-huge": hdr(an=1) + a_rec[:6] + b"\xff\xff\xff\xff" + a_rec[10:],
        "tc-set": hdr(flags=0x8380, an=1) + a_rec,
        "servfail": hdr(flags=0x8182),
        "refused-with-answer": hdr(flags=0x8185, an=1) + a_rec,
        "two-opts": hdr(an=1, ar=2) + a_rec + opt() + opt(),
        "opt-in-answer": hdr(an=1) + opt(),
        "extended-rcode": hdr(an=1, ar=1) + a_rec + b"\0\0\x29\x04\xd0\x01\0\0\0\0\0",
        "ar-glue": hdr(an=1, ar=1) + a_rec + b"\xc0\x0c\0\x1c\0\x01\0\0\0\x3c\0\x10" + b"\x20\x01\x0d\xb8" + b"\0" * 12,
    }
    for k, v in rest.items():
        # mode 1 (question inserted): drop the question bytes from our reply shape.
        body = v[:12] + v[12:]
        write(out, "upstream_reply", f"hostile-{k}", bytes([0x10]) + body)
        write(out, "upstream_reply", f"hostile-{k}-tcp", bytes([0x14]) + body)
    own = {
        "no-question-refused": hdr(flags=0x8185, qd=0),
        "no-question-noerror": hdr(flags=0x8180, qd=0, an=1) + b"\0\0\x01\0\x01\0\0\0\x3c\0\x04\x01\x01\x01\x01",
        "other-question": hdr(an=1) + name("evil.example.") + b"\0\x01\0\x01" + a_rec,
        "compressed-question": hdr(an=1) + b"\xc0\x0c\0\x01\0\x01" + a_rec,
        "qd2": hdr(qd=2) + q0[12:12 + qn] + q0[12:12 + qn],
        "not-a-response": q0,
        "runt": b"\x12\x34\x81",
        "empty": b"",
    }
    for k, v in own.items():
        write(out, "upstream_reply", f"hostile-{k}", bytes([0x00]) + v)
    write(out, "upstream_reply", "hostile-padded", bytes([0x90]) + rest["huge-counts"])
    write(out, "upstream_reply", "hostile-lying-frame", bytes([0x54]) + rest["nodata-no-soa"])
    write(out, "upstream_reply", "hostile-forced-qr", bytes([0x30]) + struct.pack(">HHHHHH", 0, 0, 0, 1, 0, 0) + a_rec)


# ---------------------------------------------------------------- text targets

def copy(out, target, label, path):
    with open(path, "rb") as f:
        write(out, target, label, f.read())


def text_seeds(out):
    for f in ("clusterdns.yaml", "example.yaml", "cluster.yaml"):
        if f != "cluster.yaml":
            copy(out, "config_file", f, os.path.join(ROOT, "config", f))
    configs = {
        "minimal": "listen: [\"127.0.0.1:53\"]\n",
        "durations": "forward:\n  timeout: 1500ms\n  health_check: 2\ncache:\n  serve_stale: 1h\nhealth:\n  lameduck: 5s\n",
        "stubs": "forward:\n  upstreams: [\"10.0.0.1\", \"[2001:db8::1]:5353\", \"dns://127.0.0.1:53\"]\n  stub_domains:\n    corp.example: [\"10.1.1.1:53\"]\n    consul.local: [\"10.150.0.1\"]\n",
        "cluster": "cluster:\n  zone: k8s.example.\n  pods: verified\n  labels: \"app in (a,b),!legacy,tier!=db\"\n  namespace_labels: team\n  nameserver_ips: [10.96.0.10, \"fd00::a\"]\n  ttl: 5\n  reverse_zones: [10.in-addr.arpa]\n",
        "hosts": "hosts:\n  file: /etc/hosts\n  fallthrough: false\n  ttl: 60\n  reload: 0\n  critical_names: [api.example.com]\n  state_file: /var/lib/clusterdns/critical.json\n",
        "ops": "metrics:\n  listen: \":9153\"\nready:\n  listen: localhost:8181\nquerylog:\n  enabled: true\n  sample: 0.5\nserver:\n  max_udp_size: 4096\n",
        "source-kube": "source:\n  kubernetes:\n    kubeconfig: ~/.kube/config\n    startup_timeout: 5s\n",
        "anchors": "x: &a [\"127.0.0.1:53\"]\nlisten: *a\n",
        "flow": "{listen: [\"0.0.0.0:53\"], cluster: {enabled: false}, forward: {upstreams: [\"1.1.1.1\"]}}\n",
    }
    for k, v in configs.items():
        write(out, "config_file", k, v.encode())

    base = os.path.join(ROOT, "tests", "fixtures", "corefiles")
    for dirpath, _, files in os.walk(base):
        for f in sorted(files):
            rel = os.path.relpath(os.path.join(dirpath, f), base).replace("/", "_")
            copy(out, "corefile", rel, os.path.join(dirpath, f))
    corefiles = {
        "snippet": "(common) {\n  errors\n  log\n}\n.:53 {\n  import common\n  forward . 10.0.0.1 10.0.0.2 {\n    policy sequential\n    max_fails 3\n  }\n  cache 30\n}\n",
        "quoted": ".:53 {\n  hosts \"/etc/hosts\" {\n    10.0.0.1 \"a b\" # comment\n    fallthrough\n  }\n  forward . \"/etc/resolv.conf\"\n}\n",
        "zones-ports": "cluster.local:53 in-addr.arpa:53 {\n  kubernetes cluster.local in-addr.arpa {\n    pods verified\n    fallthrough in-addr.arpa\n    ttl 10\n  }\n}\n.:1053 {\n  forward . 8.8.8.8\n}\n",
        "env": ".:{$PORT} {\n  forward . {$UPSTREAM}\n}\n",
        "imports": ".:53 {\n  import custom/*.override\n  forward . /etc/resolv.conf\n}\nimport custom/*.server\n",
        "nested-braces": ".:53 {\n  kubernetes cluster.local {\n    namespaces a b\n    endpoint_pod_names\n  }\n  cache {\n    success 9984 30\n    denial 9984 5\n    prefetch 10 1m 10%\n    serve_stale 1h\n  }\n}\n",
    }
    for k, v in corefiles.items():
        write(out, "corefile", k, v.encode())

    copy(out, "objects_file", "cluster.yaml", os.path.join(ROOT, "config", "cluster.yaml"))
    objects = {
        "typed-list": "kind: ServiceList\nitems:\n- metadata: {name: a, namespace: x}\n  spec: {clusterIP: 10.0.0.1, ports: [{name: http, port: 80}]}\n",
        "multi-doc": "kind: Namespace\nmetadata: {name: x}\n---\nkind: Pod\nmetadata: {name: p, namespace: x}\nstatus: {podIP: 10.1.2.3, podIPs: [{ip: 10.1.2.3}, {ip: \"fd00::3\"}]}\n---\n",
        "headless-hostnames": "apiVersion: v1\nkind: List\nitems:\n- kind: Service\n  metadata: {name: h, namespace: x}\n  spec: {clusterIP: None, ports: [{name: p, port: 1, protocol: UDP}]}\n- kind: EndpointSlice\n  metadata: {name: h-1, namespace: x, labels: {kubernetes.io/service-name: h}}\n  addressType: IPv6\n  endpoints:\n  - addresses: [\"fd00::1\"]\n    hostname: h-0\n    conditions: {ready: true}\n  - addresses: [\"fd00::2\"]\n    targetRef: {kind: Pod, name: h-1}\n  ports: [{name: p, port: 1, protocol: UDP}]\n",
        "external": "kind: Service\nmetadata: {name: ext, namespace: y}\nspec: {type: ExternalName, externalName: Foo.Example.COM.}\n",
        "bad-objects": "kind: List\nitems:\n- kind: Service\n  metadata: {namespace: x}\n- kind: Pod\n  metadata: {name: p}\n  status: {podIP: not-an-ip}\n- kind: EndpointSlice\n  metadata: {name: s}\n  addressType: FQDN\n  endpoints: [{addresses: [a.example]}]\n",
    }
    for k, v in objects.items():
        write(out, "objects_file", k, v.encode())


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out = sys.argv[1]
    query_seeds(out)
    upstream_seeds(out)
    text_seeds(out)


if __name__ == "__main__":
    main()
