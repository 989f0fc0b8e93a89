"""Answer verification for the load benchmark: every distinct query of a dnsperf query file is
asked of two servers (a peer and clusterdns) and the answers are compared whole.

Stdlib only (like the shared harness). Each query is asked twice: as dnsperf sends it (RD set,
no EDNS, the file's lowercase name) over the phase's transport, and with EDNS (payload 1232) and
the name in a random mix of upper and lower case (0x20), to check the echoed case and the OPT
record too. Compared, after decoding: rcode, opcode and the flags (AA TC RD RA AD CD), the
question's bytes (each server must also echo its query's question exactly), and the answer,
authority and additional sections as sets of records (owner name with its case, type, class,
TTL, data with the names in it decompressed; record order is free, `loadbalance` rotates it;
an SOA's serial is left out: it is the time of the last change, not the data), and the OPT
record (payload size, version, DO, extended rcode, options). Case: the question, and every owner
name that is the query's name, must keep the query's case exactly (0x20); other names (in
record data, and the owners they lead to in the additional section) are written by the server
and compared without regard to case, as DNS compares names (RFC 4343). A UDP answer with TC set
on either side is compared by its header only: a partial answer and an empty one are both valid.
A caller may declare header bits that may differ (with its reason); such answers are counted.

verify() returns a summary dict; its "mismatches" list is empty when the servers agree.
"""
import random
import select
import socket
import struct
import time

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
         "SRV": 33, "OPT": 41, "ANY": 255}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
FLAGS = [("aa", 0x0400), ("tc", 0x0200), ("rd", 0x0100), ("ra", 0x0080), ("ad", 0x0020),
         ("cd", 0x0010)]


# ---------------------------------------------------------------- wire format
def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            b = label.encode()
            out += bytes([len(b)]) + b
    return out + b"\x00"


def build_query(qid, name, qtype, edns=None, rd=True):
    """A query in wire form; `edns` is the UDP payload size of an OPT record, or None."""
    flags = 0x0100 if rd else 0
    msg = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 1 if edns else 0)
    msg += encode_name(name) + struct.pack("!HH", TYPES.get(qtype, 0) or int(qtype), 1)
    if edns:
        msg += b"\x00" + struct.pack("!HHIH", 41, edns, 0, 0)
    return msg


def read_name(msg, off):
    """(name with its case, offset after it); compression pointers followed (bounded)."""
    labels, end, hops = [], None, 0
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            hops += 1
            if hops > 64:
                raise ValueError("compression loop")
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii", "backslashreplace"))
        off += n
    return ".".join(labels) + ".", (end if end is not None else off)


def rdata_text(msg, rtype, off, rdlen):
    """Record data as text, names decompressed; an SOA without its serial."""
    end = off + rdlen
    if rtype == 1 and rdlen == 4:
        return socket.inet_ntop(socket.AF_INET, msg[off:end])
    if rtype == 28 and rdlen == 16:
        return socket.inet_ntop(socket.AF_INET6, msg[off:end])
    if rtype in (2, 5, 12, 39):
        return read_name(msg, off)[0]
    if rtype == 15:
        return f"{struct.unpack_from('!H', msg, off)[0]} {read_name(msg, off + 2)[0]}"
    if rtype == 33:
        prio, weight, port = struct.unpack_from("!HHH", msg, off)
        return f"{prio} {weight} {port} {read_name(msg, off + 6)[0]}"
    if rtype == 6:
        mname, o = read_name(msg, off)
        rname, o = read_name(msg, o)
        _serial, refresh, retry, expire, minimum = struct.unpack_from("!IIIII", msg, o)
        return f"{mname} {rname} SERIAL {refresh} {retry} {expire} {minimum}"
    return msg[off:end].hex()


def parse(msg):
    """A reply as a dict: id, flags, rcode, opcode, question (bytes), an, ns, ar (record
    tuples), opt (dict or None)."""
    qid, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", msg, 0)
    off = 12
    qstart = off
    for _ in range(qd):
        _, off = read_name(msg, off)
        off += 4
    out = {"id": qid, "flags": {k for k, bit in FLAGS if flags & bit},
           "rcode": flags & 0xF, "opcode": (flags >> 11) & 0xF, "qr": bool(flags & 0x8000),
           "question": msg[qstart:off], "an": [], "ns": [], "ar": [], "opt": None}
    for section, count in (("an", an), ("ns", ns), ("ar", ar)):
        for _ in range(count):
            owner, off = read_name(msg, off)
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", msg, off)
            off += 10
            if rtype == 41:
                opts = []
                o = off
                while o + 4 <= off + rdlen:
                    code, olen = struct.unpack_from("!HH", msg, o)
                    opts.append((code, msg[o + 4:o + 4 + olen].hex()))
                    o += 4 + olen
                out["opt"] = {"payload": rclass, "ext_rcode": ttl >> 24,
                              "version": (ttl >> 16) & 0xFF, "do": bool(ttl & 0x8000),
                              "options": sorted(opts)}
            else:
                out[section].append((owner, TYPE_NAMES.get(rtype, str(rtype)), rclass, ttl,
                                     rdata_text(msg, rtype, off, rdlen)))
            off += rdlen
    for section in ("an", "ns", "ar"):
        out[section].sort()
    return out


# ---------------------------------------------------------------- asking
def ask_all(port, queries, tcp, window=100, timeout=1.0, tries=3):
    """Send every (wire) query to 127.0.0.1:port, at most `window` outstanding; the replies'
    bytes in the queries' order (None where nothing came back). A query's ID is its index
    modulo 65536; the window keeps IDs in flight unique."""
    replies = [None] * len(queries)
    if tcp:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        buf = b""
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
    pending = {}   # id -> (index, sent at, tries)
    nxt = 0

    def send(i, attempt):
        q = queries[i]
        data = struct.pack("!H", len(q)) + q if tcp else q
        if tcp:
            sock.setblocking(True)
            sock.sendall(data)
            sock.setblocking(False)
        else:
            sock.send(data)
        pending[i & 0xFFFF] = (i, time.monotonic(), attempt)

    try:
        while nxt < len(queries) or pending:
            while nxt < len(queries) and len(pending) < window:
                send(nxt, 1)
                nxt += 1
            ready, _, _ = select.select([sock], [], [], 0.05)
            if ready:
                if tcp:
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        raise RuntimeError(f"127.0.0.1:{port} closed the TCP connection")
                    buf += chunk
                    msgs = []
                    while len(buf) >= 2 and len(buf) >= 2 + struct.unpack_from("!H", buf)[0]:
                        n = struct.unpack_from("!H", buf)[0]
                        msgs.append(buf[2:2 + n])
                        buf = buf[2 + n:]
                else:
                    msgs = []
                    while True:
                        try:
                            msgs.append(sock.recv(65535))
                        except BlockingIOError:
                            break
                for m in msgs:
                    if len(m) < 12:
                        continue
                    p = pending.pop(struct.unpack_from("!H", m)[0], None)
                    if p:
                        replies[p[0]] = m
            now = time.monotonic()
            for qid, (i, sent, attempt) in list(pending.items()):
                if now - sent > timeout:
                    del pending[qid]
                    if attempt < tries and not tcp:
                        send(i, attempt + 1)
    finally:
        sock.close()
    return replies


# ---------------------------------------------------------------- comparing
NAME_TYPES = {"NS", "CNAME", "PTR", "MX", "SRV", "SOA"}


def case_rule(records, qname):
    """Records with the case that must match kept, the rest folded (see the module doc)."""
    out = []
    for owner, rtype, rclass, ttl, data in records:
        if owner.lower() != qname.lower():
            owner = owner.lower()
        out.append((owner, rtype, rclass, ttl, data.lower() if rtype in NAME_TYPES else data))
    return sorted(out)


def same_records(a, b, ttl_slack):
    if not ttl_slack:
        return a == b
    key = lambda r: (r[0], r[1], r[2], r[4])
    a, b = sorted(a, key=key), sorted(b, key=key)
    return ([key(r) for r in a] == [key(r) for r in b]
            and all(abs(x[3] - y[3]) <= ttl_slack for x, y in zip(a, b)))


def compare(ref, got, sent_question, qname, udp, ttl_slack, allowed_flags=frozenset()):
    """Differences between two parsed replies, as short strings; header bits in
    `allowed_flags` may differ (the caller counts that)."""
    d = []
    for who, r in (("peer", ref), ("clusterdns", got)):
        if r["question"] != sent_question:
            d.append(f"{who} did not echo the question as sent")
    for k in ("rcode", "opcode", "qr", "flags"):
        if k == "flags" and (ref[k] ^ got[k]) <= allowed_flags:
            continue
        if ref[k] != got[k]:
            d.append(f"{k} {sorted(ref[k]) if k == 'flags' else ref[k]} vs "
                     f"{sorted(got[k]) if k == 'flags' else got[k]}")
    if udp and ("tc" in ref["flags"] or "tc" in got["flags"]):
        return d   # truncated: compared by the header alone
    if ref["question"] != got["question"]:
        d.append("question bytes differ")
    # A peer that writes its zone's case for the owner (BIND over TCP) instead of echoing the
    # question's: the owner's case is then compared folded on both sides; clusterdns's echo
    # is still checked against every peer that echoes.
    peer_echoes = all(r[0] == qname for r in ref["an"] if r[0].lower() == qname.lower())
    fold = case_rule if peer_echoes else (lambda rs, q: case_rule(rs, q + "\0"))
    for s in ("an", "ns", "ar"):
        a, b = fold(ref[s], qname), fold(got[s], qname)
        if not same_records(a, b, ttl_slack):
            only_a = [r for r in a if r not in b][:2]
            only_b = [r for r in b if r not in a][:2]
            d.append(f"{s}: {len(a)} vs {len(b)} records; only peer {only_a} only clusterdns {only_b}")
    if ref["opt"] != got["opt"]:
        d.append(f"OPT {ref['opt']} vs {got['opt']}")
    return d


def random_case(name, rng):
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


def distinct_queries(path):
    """The distinct (name, type) lines of a dnsperf query file, in order."""
    seen = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                seen.setdefault((parts[0], parts[1]), None)
    return list(seen)


def verify(ref_port, cd_port, path, tcp=False, ttl_slack=0, allowed_flags=frozenset(), seed=1,
           examples=10):
    """Every distinct query of `path`, both ways (as dnsperf sends it; EDNS with 0x20 case),
    asked of both servers and compared. A summary dict. Header bits in `allowed_flags` (a
    difference the caller declares, with its reason) may differ; such answers are counted."""
    rng = random.Random(seed)
    cases = []
    for name, qtype in distinct_queries(path):
        cases.append(("plain", name, qtype, None))
        cases.append(("edns+0x20", random_case(name, rng), qtype, 1232))
    wire = [build_query(i & 0xFFFF, n, t, e) for i, (_, n, t, e) in enumerate(cases)]
    ref = ask_all(ref_port, wire, tcp)
    got = ask_all(cd_port, wire, tcp)
    summary = {"file": path.rsplit("/", 1)[-1], "transport": "tcp" if tcp else "udp",
               "queries": len(cases), "identical": 0, "truncated_compared_by_flags": 0,
               "mismatches": [], "mismatch_count": 0, "unanswered": 0,
               "allowed_flags": sorted(allowed_flags), "allowed_flag_differences": 0}
    for (variant, name, qtype, _), q, r, g in zip(cases, wire, ref, got):
        if r is None or g is None:
            summary["unanswered"] += 1
            diff = [f"no answer from {'the peer' if r is None else 'clusterdns'}"]
        else:
            pr, pg = parse(r), parse(g)
            qend = 12 + len(encode_name(name)) + 4
            diff = compare(pr, pg, q[12:qend], name.rstrip(".") + ".", not tcp, ttl_slack,
                           frozenset(allowed_flags))
            if pr["flags"] != pg["flags"] and not diff:
                summary["allowed_flag_differences"] += 1
            if not diff and not tcp and ("tc" in pr["flags"] or "tc" in pg["flags"]):
                summary["truncated_compared_by_flags"] += 1
        if diff:
            summary["mismatch_count"] += 1
            if len(summary["mismatches"]) < examples:
                summary["mismatches"].append(f"{name} {qtype} ({variant}): " + "; ".join(diff))
        else:
            summary["identical"] += 1
    return summary
