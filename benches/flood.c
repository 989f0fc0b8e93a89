/* A paced UDP query sender for the limits benchmark (benches/limits.py). dnsperf stalls when a
 * server drops a share of its queries (its lost queries keep their slots), which is exactly
 * what rate limiting and load shedding do; this sender never waits for a reply: it sends QPS
 * queries a second (in 1 ms ticks, over 4 sockets so the server's SO_REUSEPORT workers all get
 * some) from SRC for SECS seconds and counts what comes back. Loopback only.
 *
 *   cc -O2 -o flood flood.c
 *   ./flood SRC PORT QPS SECS random ZONE      random names under ZONE (water torture)
 *   ./flood SRC PORT QPS SECS file PATH        "name TYPE" lines (A, AAAA, SRV), in turn
 *
 * Prints one line per second ("t=N sent=N replies=N") and a summary line:
 *   sent=N replies=N tc=N noerror=N nxdomain=N refused=N servfail=N other=N
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SOCKS 4
#define MAXNAMES 100000

static char *names[MAXNAMES];
static uint16_t types[MAXNAMES];
static int nnames;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* A query for `name` (dotted, no trailing dot) of `type`, RD set, no EDNS. */
static int build(unsigned char *m, uint16_t id, const char *name, uint16_t type) {
    m[0] = id >> 8; m[1] = id & 0xff; m[2] = 0x01; m[3] = 0;
    m[4] = 0; m[5] = 1; memset(m + 6, 0, 6);
    int n = 12;
    const char *p = name;
    while (*p) {
        const char *dot = strchr(p, '.');
        int len = dot ? (int)(dot - p) : (int)strlen(p);
        if (len > 63 || n + len + 6 > 300) return 0;
        m[n++] = (unsigned char)len;
        memcpy(m + n, p, len);
        n += len;
        p += len;
        if (*p == '.') p++;
    }
    m[n++] = 0;
    m[n++] = type >> 8; m[n++] = type & 0xff; m[n++] = 0; m[n++] = 1;
    return n;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s SRC PORT QPS SECS random ZONE | file PATH\n", argv[0]);
        return 2;
    }
    const char *src = argv[1];
    int port = atoi(argv[2]);
    double qps = atof(argv[3]), secs = atof(argv[4]);
    int random_mode = strcmp(argv[5], "random") == 0;
    const char *zone = argv[6];
    if (!random_mode) {
        FILE *f = fopen(argv[6], "r");
        if (!f) { perror("open"); return 1; }
        char line[512], t[16];
        while (nnames < MAXNAMES && fgets(line, sizeof line, f)) {
            char name[400];
            if (sscanf(line, "%399s %15s", name, t) != 2) continue;
            names[nnames] = strdup(name);
            types[nnames] = strcmp(t, "AAAA") == 0 ? 28 : strcmp(t, "SRV") == 0 ? 33 : 1;
            nnames++;
        }
        fclose(f);
        if (!nnames) { fprintf(stderr, "no names\n"); return 1; }
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    int s[SOCKS];
    for (int i = 0; i < SOCKS; i++) {
        s[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int big = 8 << 20;
        setsockopt(s[i], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        setsockopt(s[i], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
        struct sockaddr_in from = {.sin_family = AF_INET};
        inet_pton(AF_INET, src, &from.sin_addr);
        if (bind(s[i], (struct sockaddr *)&from, sizeof from) != 0) { perror("bind"); return 1; }
    }
    unsigned long sent = 0, replies = 0, tc = 0, rc[6] = {0}, other = 0, last_sent = 0,
                  last_replies = 0;
    uint64_t seq = (uint64_t)getpid() << 32;
    double start = now_s(), owed = 0, last = start;
    int next_report = 1, k = 0;
    unsigned char q[320], r[4096];
    for (;;) {
        double t = now_s();
        if (t - start >= secs + 1.0) break; /* one more second for late replies */
        if (t - start < secs) {
            owed += (t - last) * qps;
            last = t;
            while (owed >= 1) {
                char name[300];
                uint16_t type = 1;
                const char *nm = name;
                if (random_mode) {
                    snprintf(name, sizeof name, "r%016llx.%s", (unsigned long long)(seq++ * 0x9E3779B97F4A7C15ull), zone);
                } else {
                    nm = names[k % nnames];
                    type = types[k % nnames];
                    k++;
                }
                int n = build(q, (uint16_t)sent, nm, type);
                if (n && sendto(s[sent % SOCKS], q, n, 0, (struct sockaddr *)&to, sizeof to) == n)
                    sent++;
                owed -= 1;
                if (owed > qps) owed = qps; /* never more than a second behind */
            }
        }
        for (int i = 0; i < SOCKS; i++) {
            ssize_t n;
            while ((n = recv(s[i], r, sizeof r, 0)) >= 4) {
                replies++;
                if (r[2] & 0x02) tc++;
                int code = r[3] & 0x0f;
                if (code == 0 || code == 2 || code == 3 || code == 5) rc[code]++;
                else other++;
            }
        }
        if (t - start >= next_report) {
            printf("t=%d sent=%lu replies=%lu\n", next_report, sent - last_sent, replies - last_replies);
            fflush(stdout);
            last_sent = sent;
            last_replies = replies;
            next_report++;
        }
        usleep(1000);
    }
    printf("sent=%lu replies=%lu tc=%lu noerror=%lu nxdomain=%lu refused=%lu servfail=%lu other=%lu\n",
           sent, replies, tc, rc[0], rc[3], rc[5], rc[2], other);
    return 0;
}
