/* A slow DNS upstream for the limits benchmark (benches/limits.py): answers every UDP query
 * after DELAY_MS milliseconds, NXDOMAIN, or NOERROR with one A record (192.0.2.1, TTL 3600)
 * for names whose first label starts with "cached". Loopback only. Prints the number of
 * queries received so far on every line it reads from stdin (the harness asks by writing a
 * newline), and exits at end of input.
 *
 *   cc -O2 -o slow_upstream slow_upstream.c && ./slow_upstream PORT DELAY_MS
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RING 65536
#define MAXQ 512

struct item {
    uint64_t due;
    struct sockaddr_in from;
    uint16_t len;
    unsigned char msg[MAXQ + 16];
};

static struct item ring[RING];

static uint64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Turn the query in `it` into its reply, in place. */
static void make_reply(struct item *it) {
    unsigned char *m = it->msg;
    if (it->len < 12) return;
    /* end of the question */
    size_t i = 12;
    while (i < it->len && m[i] != 0) i += m[i] + 1;
    size_t qend = i + 5;
    if (qend > it->len) return;
    int cached = it->len > 19 && memcmp(m + 13, "cached", 6) == 0;
    m[2] = 0x80 | (m[2] & 0x79) | 0x04; /* QR, opcode and RD kept, AA */
    m[3] = cached ? 0x80 : 0x83;        /* RA, NOERROR or NXDOMAIN */
    m[6] = 0; m[7] = cached ? 1 : 0;    /* ANCOUNT */
    m[8] = 0; m[9] = 0; m[10] = 0; m[11] = 0; /* no authority, no OPT */
    size_t n = qend;
    if (cached) {
        unsigned char rr[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 192, 0, 2, 1};
        memcpy(m + n, rr, sizeof rr);
        n += sizeof rr;
    }
    it->len = (uint16_t)n;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s PORT DELAY_MS\n", argv[0]); return 2; }
    int port = atoi(argv[1]);
    uint64_t delay = (uint64_t)atoi(argv[2]);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int big = 8 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
    unsigned long received = 0, dropped = 0;
    size_t head = 0, tail = 0; /* ring[head..tail) waiting */
    struct pollfd p[2] = {{.fd = s, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
    for (;;) {
        int timeout = -1;
        if (head != tail) {
            uint64_t n = now_ms(), due = ring[head % RING].due;
            timeout = due > n ? (int)(due - n) : 0;
        }
        poll(p, 2, timeout);
        if (p[1].revents) {
            char line[64];
            if (!fgets(line, sizeof line, stdin)) return 0;
            printf("%lu %lu\n", received, dropped);
            fflush(stdout);
        }
        for (int k = 0; k < 256; k++) {
            if (tail - head >= RING) { /* full: read and drop */
                unsigned char junk[MAXQ];
                if (recv(s, junk, sizeof junk, 0) < 0) break;
                received++; dropped++;
                continue;
            }
            struct item *it = &ring[tail % RING];
            socklen_t fl = sizeof it->from;
            ssize_t r = recvfrom(s, it->msg, MAXQ, 0, (struct sockaddr *)&it->from, &fl);
            if (r < 0) break;
            received++;
            it->len = (uint16_t)r;
            it->due = now_ms() + delay;
            tail++;
        }
        uint64_t n = now_ms();
        while (head != tail && ring[head % RING].due <= n) {
            struct item *it = &ring[head % RING];
            make_reply(it);
            sendto(s, it->msg, it->len, 0, (struct sockaddr *)&it->from, sizeof it->from);
            head++;
        }
    }
}
