#!/usr/bin/env python3
"""Issue 17's benchmarks (not CI): one noisy client never takes DNS from the rest.

  python3 benches/limits.py [--binary target/release/clusterdns] [--phases flood,tcp,saturate]
                            [--secs 20] [--saturate-secs 600] [--work /tmp/clusterdns-limits]

Everything runs on loopback: clusterdns pinned to CPU 0 (taskset), the load (dnsperf) and the
slow upstream (benches/slow_upstream.c, compiled here) on CPU 1.

flood     A flooder on 127.0.0.2 (dnsperf -a) sends 50,000 qps of random names under a
          forwarded zone (`flood.test`, answered NXDOMAIN by the upstream after 50 ms) while a
          well-behaved client on 127.0.0.3 sends 1,000 qps of cluster names and cached names
          (dnsperf -v: every latency). Measured: the well-behaved client's answered share and
          latency percentiles without the flood (baseline), with it, and with the flooder
          unpaced (the highest rate this machine sends); what the upstream received per second
          during the flood; `dig` from the flooder's address (TC answers at the slip rate).
          clusterdns runs with its default limits.
tcp       10,000 idle TCP connections from 127.0.0.2 opened at once, then 1,000 slowloris ones
          (a length prefix and part of a message, then nothing): the server's open descriptors
          (/proc/PID/fd) through it, and `dig` over UDP and TCP from 127.0.0.3 meanwhile. Twice:
          the default limits (the per-client cap, 32, binds), and a per-client cap above the
          total (the total cap, 1,024, binds).
saturate  clusterdns in a CPU cgroup (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us` where v2 has
          no cpu controller: the same CFS bandwidth limit) of --quota of one CPU. First its
          saturating rate S over cluster names (dnsperf unpaced), then 3 x S offered for
          --saturate-secs: RSS every 5 s and the answered rate. The same with random names under
          a forwarded zone and the slow upstream. The load generator is one address, so it is
          exempt from the per-client limits here: what is measured is the bounded work behind
          them. The cgroup is removed at the end (also on failure).

Results: one JSON file in --work and a summary on stdout.
"""
import argparse
import json
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOODER, CLIENT = "127.0.0.2", "127.0.0.3"
CLUSTER_NAMES = [
    "kubernetes.default.svc.cluster.local A",
    "kube-dns.kube-system.svc.cluster.local A",
    "_https._tcp.kubernetes.default.svc.cluster.local SRV",
    "kube-dns.kube-system.svc.cluster.local AAAA",
]
STARTED = []


def free_port():
    """A loopback port free for UDP and TCP both."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def spawn(argv, cpu, **kw):
    p = subprocess.Popen(["taskset", "-c", str(cpu)] + argv, **kw)
    STARTED.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Upstream:
    """benches/slow_upstream.c: NXDOMAIN after DELAY ms; `cached*` names answered."""

    def __init__(self, work, delay_ms):
        exe = os.path.join(work, "slow_upstream")
        subprocess.run(["cc", "-O2", "-o", exe, os.path.join(REPO, "benches/slow_upstream.c")],
                       check=True)
        self.port = free_port()
        self.proc = spawn([exe, str(self.port), str(delay_ms)], 1, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
        time.sleep(0.2)

    def received(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline().split()[0])


class Server:
    def __init__(self, work, binary, name, extra):
        self.dir = os.path.join(work, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        cfg = os.path.join(self.dir, "clusterdns.yaml")
        with open(cfg, "w") as f:
            f.write(f"listen: [\"127.0.0.1:0\"]\nsource:\n  file: {REPO}/config/cluster.yaml\n"
                    "metrics:\n  listen: \"127.0.0.1:0\"\nhealth:\n  listen: \"127.0.0.1:0\"\n"
                    "ready:\n  listen: \"127.0.0.1:0\"\n" + extra)
        self.log = os.path.join(self.dir, "output.log")
        self.proc = spawn([binary, "serve", "--config", cfg], 0, stdout=subprocess.DEVNULL,
                          stderr=open(self.log, "w"))
        self.dns = self.metrics = None
        for _ in range(200):
            text = open(self.log).read()
            m = re.search(r"listening dns=127\.0\.0\.1:(\d+)", text)
            mm = re.search(r"listening metrics=(\S+)", text)
            if m and mm:
                self.dns, self.metrics = int(m.group(1)), mm.group(1)
                break
            time.sleep(0.05)
        if not self.dns:
            raise SystemExit("clusterdns did not start:\n" + open(self.log).read()[-2000:])
        time.sleep(0.5)

    def scrape(self):
        return urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=5).read().decode()

    def dropped(self, reason):
        m = re.search(r'clusterdns_dropped_total\{reason="%s"\} (\S+)' % reason, self.scrape())
        return float(m.group(1)) if m else 0.0

    def rss_kib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self):
        stop(self.proc)


def build_flood(work):
    exe = os.path.join(work, "flood-sender")
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(REPO, "benches/flood.c")], check=True)
    return exe


def flood_argv(exe, src, port, qps, secs, mode, what):
    return ["taskset", "-c", "1", exe, src, str(port), str(int(qps)), str(secs), mode, what]


def parse_flood(out):
    """flood.c's summary line as a dict, plus the per-second reply counts."""
    lines = out.strip().splitlines()
    r = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", lines[-1])} if lines else {}
    per_s = [int(m.group(1)) for l in lines[:-1] for m in [re.search(r"replies=(\d+)", l)] if m]
    r["replies_per_second"] = per_s
    return r


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def dnsperf(port, qfile, secs, src=None, qps=None, clients=1, outstanding=100, timeout=1,
            verbose=False, mode="udp"):
    argv = ["timeout", str(secs + timeout + 20), "taskset", "-c", "1", "dnsperf", "-s",
            "127.0.0.1", "-p", str(port), "-d", qfile, "-l", str(secs), "-c", str(clients),
            "-q", str(outstanding), "-t", str(timeout), "-m", mode]
    if src:
        argv += ["-a", src]
    if qps:
        argv += ["-Q", str(qps)]
    if verbose:
        argv += ["-v"]
    return argv


def parse_dnsperf(out):
    def num(pat, cast=float):
        m = re.search(pat, out)
        return cast(m.group(1)) if m else None
    lat = [float(m.group(1)) * 1000 for l in out.splitlines()
           for m in [re.match(r"> (?!REFUSED)\S+ \S+ \S+ ([\d.]+)$", l)] if m]
    r = {
        "sent": num(r"Queries sent:\s+(\d+)", int),
        "completed": num(r"Queries completed:\s+(\d+)", int),
        "lost": num(r"Queries lost:\s+(\d+)", int),
        "qps": num(r"Queries per second:\s+([\d.]+)"),
        "rcodes": (re.search(r"Response codes:\s+(.*)", out) or [None, ""])[1].strip(),
    }
    if r["sent"]:
        r["answered_pct"] = round(100.0 * (r["completed"] or 0) / r["sent"], 3)
    if lat:
        lat.sort()
        q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 3)
        r.update(p50_ms=q(0.50), p90_ms=q(0.90), p99_ms=q(0.99), p999_ms=q(0.999),
                 max_ms=round(lat[-1], 3))
    return r


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout


# ---------------------------------------------------------------------------------------- flood
def flood_once(a, s, up, exe, good, rate):
    """The well-behaved client's run while flood.c floods at `rate`; `dig` from the
    flooder's address meanwhile."""
    import threading
    before_up = up.received()
    limited0 = s.dropped("rate_limited") + s.dropped("rate_limited_slip")
    flood_secs = a.secs + 8
    fl = subprocess.Popen(flood_argv(exe, FLOODER, s.dns, rate, flood_secs, "random",
                                     "flood.test"),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    STARTED.append(fl)
    time.sleep(2)
    digs = []

    def dig_loop():
        for i in range(20):
            digs.append(run(["dig", "@127.0.0.1", "-p", str(s.dns), "-b", FLOODER, "+ignore",
                             "+notcp", "+time=1", "+tries=1", f"d{i}.flood.test"]))
    t = threading.Thread(target=dig_loop)
    t.start()
    t0, up0 = time.time(), up.received()
    wb = parse_dnsperf(run(dnsperf(s.dns, good, a.secs, src=CLIENT, qps=1000, verbose=True)))
    t1, up1 = time.time(), up.received()
    t.join()
    fl_out = parse_flood(fl.communicate()[0])
    fl_out["sent_per_second"] = round(fl_out.get("sent", 0) / flood_secs)
    fl_out["answered_not_tc_per_second"] = round(
        (fl_out.get("replies", 0) - fl_out.get("tc", 0)) / flood_secs)
    del fl_out["replies_per_second"]
    wb["upstream_qps_during"] = round((up1 - up0) / (t1 - t0), 1)
    wb["upstream_total_during_flood"] = up.received() - before_up
    wb["flooder"] = fl_out
    wb["limited"] = s.dropped("rate_limited") + s.dropped("rate_limited_slip") - limited0
    tc = lambda d: re.search(r"flags:[^;]* tc", d)
    wb["dig_from_flooder"] = {
        "tc": sum(1 for d in digs if tc(d)),
        "answered_no_tc": sum(1 for d in digs if "status:" in d and not tc(d)),
        "timed_out": sum(1 for d in digs if "status:" not in d),
    }
    return wb


def phase_flood(a, work, binary):
    up = Upstream(work, 50)
    s = Server(work, binary, "flood",
               f"forward:\n  upstreams: [\"127.0.0.1:{up.port}\"]\n  timeout: 2s\n")
    good = write_lines(os.path.join(work, "good.txt"),
                       CLUSTER_NAMES * 10 + [f"cached{i}.example.test A" for i in range(40)])
    # Warm the cache with the cached names.
    run(dnsperf(s.dns, good, 2, src=CLIENT, qps=200))
    exe = build_flood(work)
    res = {"runs": [], "rss_kib_start": s.rss_kib()}
    for rep in range(a.repeat):
        one = {"baseline": parse_dnsperf(run(dnsperf(s.dns, good, a.secs, src=CLIENT, qps=1000,
                                                     verbose=True)))}
        # The flooder is flood.c, not dnsperf: dnsperf stalls when most of its queries go
        # unanswered (lost queries keep their slots), which is what limiting does to it.
        for label, rate in (("flood_50k", 50_000), ("flood_max", 10_000_000)):
            one[label] = flood_once(a, s, up, exe, good, rate)
            time.sleep(3)
        res["runs"].append(one)
        print(json.dumps({"flood_run": rep, **{k: {x: v.get(x) for x in (
            "answered_pct", "p50_ms", "p99_ms", "upstream_qps_during")} for k, v in one.items()}}),
            flush=True)
    for label in ("baseline", "flood_50k", "flood_max"):
        rs = [r[label] for r in res["runs"]]
        res[label + "_summary"] = {k: [r.get(k) for r in rs] for k in (
            "answered_pct", "p50_ms", "p99_ms", "p999_ms", "upstream_qps_during")}
    res["slip_ratio"] = round(s.dropped("rate_limited_slip") /
                              max(1.0, s.dropped("rate_limited") + s.dropped("rate_limited_slip")), 4)
    res["rss_kib_end"] = s.rss_kib()
    s.stop()
    stop(up.proc)
    return res


# ------------------------------------------------------------------------------------------ tcp
def connect_from(ip, port, n, payload=None):
    socks = []
    for _ in range(n):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.bind((ip, 0))
        c.settimeout(1)
        try:
            c.connect(("127.0.0.1", port))
            if payload:
                c.send(payload)
            socks.append(c)
        except OSError:
            c.close()
    return socks


def timed(argv):
    t = time.time()
    out = run(argv)
    return out, round((time.time() - t) * 1000, 1)


def phase_tcp(a, work, binary):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 30000), hard))
    res = {}
    for label, extra in (("default_limits", ""),
                         ("total_cap_binds",
                          "limits:\n  tcp:\n    max_connections_per_client: 100000\n")):
        s = Server(work, binary, "tcp-" + label, extra)
        base = s.fds()
        t0 = time.time()
        idle = connect_from(FLOODER, s.dns, 10_000)
        t_idle = time.time() - t0
        after_idle = s.fds()
        slow = connect_from(FLOODER, s.dns, 1000, payload=b"\x00\x28\x12\x34")
        after_slow = s.fds()
        udp, udp_ms = timed(["dig", "@127.0.0.1", "-p", str(s.dns), "-b", CLIENT, "+short",
                             "+time=2", "+tries=1", "kubernetes.default.svc.cluster.local"])
        tcp, tcp_ms = timed(["dig", "@127.0.0.1", "-p", str(s.dns), "-b", CLIENT, "+short",
                             "+tcp", "+time=2", "+tries=1", "kubernetes.default.svc.cluster.local"])
        peak = max(after_idle, after_slow, s.fds())
        time.sleep(3)
        res[label] = {
            "fds_base": base, "fds_after_10k_idle": after_idle,
            "fds_after_1k_slowloris": after_slow, "fds_peak": peak, "fds_after_3s": s.fds(),
            "connected_idle": len(idle), "connected_slowloris": len(slow),
            "seconds_to_open_10k": round(t_idle, 2),
            "udp_answered": bool(udp.strip()), "udp_ms": udp_ms,
            "tcp_answered": bool(tcp.strip()), "tcp_ms": tcp_ms,
            "evicted": s.dropped("tcp_evicted"), "stalled": s.dropped("tcp_stalled"),
            "refused_total": s.dropped("tcp_conn_limit"),
            "refused_per_client": s.dropped("tcp_client_limit"),
        }
        for c in idle + slow:
            c.close()
        s.stop()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return res


# ------------------------------------------------------------------------------------- saturate
class CpuCgroup:
    """A CPU bandwidth cap: cgroup v2 `cpu.max` when the v2 hierarchy has the cpu controller,
    else v1 `cpu.cfs_quota_us` (the same CFS bandwidth control). Removed by `remove`."""

    def __init__(self, quota):
        name = f"clusterdns-limits-{os.getpid()}"
        period = 100_000
        v2 = "/sys/fs/cgroup"
        if "cpu" in open(os.path.join(v2, "cgroup.controllers")).read().split() \
                if os.path.exists(os.path.join(v2, "cgroup.controllers")) else False:
            self.path = os.path.join(v2, name)
            os.mkdir(self.path)
            open(os.path.join(self.path, "cpu.max"), "w").write(f"{int(quota * period)} {period}")
            self.kind = "cgroup v2 cpu.max"
        else:
            self.path = os.path.join("/sys/fs/cgroup/cpu", name)
            os.mkdir(self.path)
            open(os.path.join(self.path, "cpu.cfs_period_us"), "w").write(str(period))
            open(os.path.join(self.path, "cpu.cfs_quota_us"), "w").write(str(int(quota * period)))
            self.kind = "cgroup v1 cpu.cfs_quota_us (no cpu controller in v2 here)"

    def add(self, pid):
        open(os.path.join(self.path, "cgroup.procs"), "w").write(str(pid))

    def remove(self):
        if os.path.isdir(self.path):
            for _ in range(50):
                try:
                    os.rmdir(self.path)
                    return
                except OSError:
                    time.sleep(0.1)


def saturate_one(a, work, binary, label, qfile, extra, cg, sat_file=None):
    """`qfile` None: random names under flood.test (flood.c makes them; dnsperf reads
    `sat_file`)."""
    s = Server(work, binary, "sat-" + label,
               "limits:\n  exempt: [\"127.0.0.1/32\"]\n" + extra)
    cg.add(s.proc.pid)
    # Threads started before the move are in it too: cgroup.procs moves the whole process.
    # The saturating rate: dnsperf unpaced (it clocks itself on the answers; no loss), with
    # as many outstanding as forwarding takes at once for the forwarded names.
    dq = qfile or sat_file
    outstanding = 200 if qfile else 1000
    run(dnsperf(s.dns, dq, 3, clients=4, outstanding=outstanding))
    sat = parse_dnsperf(run(dnsperf(s.dns, dq, 10, clients=4, outstanding=outstanding)))
    S = int(sat["qps"] or 1)
    rss0 = s.rss_kib()
    offered = 3 * S
    mode, what = ("random", "flood.test") if qfile is None else ("file", qfile)
    p = subprocess.Popen(flood_argv(build_flood(work), "127.0.0.1", s.dns, offered,
                                    a.saturate_secs, mode, what),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    STARTED.append(p)
    # What the server answered, from its own counter (coredns_dns_responses_total by rcode):
    # the sender, one thread on a shared core, cannot read every reply at 3 x S.
    def served():
        out = {}
        for rc, v in re.findall(r'coredns_dns_responses_total\{[^}]*rcode="(\w+)"[^}]*\} (\S+)',
                                s.scrape()):
            out[rc] = out.get(rc, 0.0) + float(v)
        return out
    rss, windows = [], []
    t0 = time.time()
    time.sleep(2)  # the first seconds: the sender ramps up
    prev, tp = served(), time.time()
    while p.poll() is None:
        rss.append((round(time.time() - t0), s.rss_kib()))
        time.sleep(5)
        cur, tc = served(), time.time()
        if p.poll() is None:
            windows.append({rc: (cur.get(rc, 0) - prev.get(rc, 0)) / (tc - tp) for rc in cur})
        prev, tp = cur, tc
    out = parse_flood(p.communicate()[0])
    out.pop("replies_per_second")
    total = [sum(w.values()) for w in windows] or [0]
    real = [sum(v for rc, v in w.items() if rc != "REFUSED") for w in windows] or [0]
    r = {
        "saturating_qps": S, "saturating_run": sat, "offered_qps": offered,
        "sender": out, "sent_qps": round(out.get("sent", 0) / a.saturate_secs),
        "server_answered_qps_mean": round(statistics.mean(total)),
        "server_answered_qps_min_5s": round(min(total)),
        "server_answered_qps_max_5s": round(max(total)),
        "answered_over_saturating": round(statistics.mean(total) / S, 3),
        "not_refused_over_saturating": round(statistics.mean(real) / S, 3),
        "not_refused_over_saturating_min_5s": round(min(real) / S, 3),
        "sender_received_over_saturating": round(out.get("replies", 0) / a.saturate_secs / S, 3),
        "rss_kib_start": rss0, "rss_kib_max": max(v for _, v in rss) if rss else None,
        "rss_kib_end": s.rss_kib(), "rss_samples": rss[::6],
        "shed_max_concurrent": s.dropped("max_concurrent"),
        "cache_entries": sum(float(v) for v in re.findall(
            r"coredns_cache_entries\{[^}]*\} (\S+)", s.scrape())),
    }
    r["rss_growth_mib"] = round(((r["rss_kib_max"] or rss0) - rss0) / 1024, 2)
    s.stop()
    return r


def phase_saturate(a, work, binary):
    cg = CpuCgroup(a.quota)
    res = {"cgroup": cg.kind, "quota_cpus": a.quota, "secs": a.saturate_secs}
    up = None
    try:
        hits = write_lines(os.path.join(work, "sat-hits.txt"), CLUSTER_NAMES * 25)
        res["cluster_names"] = saturate_one(a, work, binary, "hits", hits, "", cg)
        up = Upstream(work, 50)
        rnd = write_lines(os.path.join(work, "sat-random.txt"),
                          [f"r{random.getrandbits(48):012x}.flood.test A" for _ in range(500_000)])
        res["random_names_slow_upstream"] = saturate_one(
            a, work, binary, "random", None,
            f"forward:\n  upstreams: [\"127.0.0.1:{up.port}\"]\n  timeout: 2s\n", cg,
            sat_file=rnd)
    finally:
        if up:
            stop(up.proc)
        cg.remove()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(REPO, "target/release/clusterdns"))
    ap.add_argument("--work", default="/tmp/clusterdns-limits")
    ap.add_argument("--phases", default="flood,tcp,saturate")
    ap.add_argument("--secs", type=int, default=20, help="seconds per flood measurement (20)")
    ap.add_argument("--saturate-secs", type=int, default=600, help="seconds at 3x (600)")
    ap.add_argument("--repeat", type=int, default=3, help="flood measurements (3)")
    ap.add_argument("--quota", type=float, default=0.25, help="CPUs the cgroup allows (0.25)")
    a = ap.parse_args()
    for tool in ("dnsperf", "dig", "taskset", "cc"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (Debian: dnsperf bind9-dnsutils util-linux gcc)")
    os.makedirs(a.work, exist_ok=True)
    results = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "commit": run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]).strip()}
    try:
        for ph in a.phases.split(","):
            results[ph] = {"flood": phase_flood, "tcp": phase_tcp,
                           "saturate": phase_saturate}[ph](a, a.work, a.binary)
            print(json.dumps({ph: results[ph]}, indent=1), flush=True)
    finally:
        for p in STARTED:
            stop(p)
    path = os.path.join(a.work, f"limits-{results['commit']}-{int(time.time())}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print("results:", path)


if __name__ == "__main__":
    sys.exit(main())
