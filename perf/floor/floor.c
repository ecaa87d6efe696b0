// perf/floor: the least work that moves a proxied call's datagrams through an address, to measure what the
// kernel alone costs under the same sipp load (see perf/README.md, "The floor").
//
//   floor PORT UAS_PORT [--io mmsg|ring] [--trying] [--workers N]
//
// Each worker (one per CPU, pinned, as ringsipd's shards) binds 127.0.0.1:PORT with SO_REUSEPORT and loops:
// a request gets one Via line inserted after its request line and goes to 127.0.0.1:UAS_PORT; a response loses
// its first Via line (ours) and goes to the host:port of the Via below it. No SIP parsing: byte searches only.
// With --trying (the stateful floor) an INVITE is also answered "100 Trying" (its Via, From, To, Call-ID and
// CSeq lines copied), the one datagram more a stateful proxy sends per call.
//
// --io mmsg: blocking recvmmsg (up to 64 at a time) and one sendmmsg per batch.
// --io ring: io_uring set up as ringsipd sets it up (SINGLE_ISSUER | DEFER_TASKRUN, a multishot recvmsg on a
// provided-buffer ring, a sendmsg SQE per datagram, one submit-and-wait per turn).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { BATCH = 64, DATAGRAM = 9000, ROOM = 256, BUFFERS = 1024, BUFFER_BYTES = 9216 };

static int listen_port, uas_port, want_trying, use_ring;
static volatile sig_atomic_t stopping;

struct out {
    struct sockaddr_in to;
    size_t length;
    char bytes[DATAGRAM + ROOM];
};

struct worker {
    int index, fd;
    unsigned long branch;
    struct out outs[2 * BATCH + 1];
};

static const char *find(const char *from, const char *end, const char *needle, size_t n) {
    return memmem(from, (size_t)(end - from), needle, n);
}

// The Via line of ours a request gets: a fresh branch each, as a proxy's client transaction has.
static size_t our_via(struct worker *w, char *into) {
    int n = snprintf(into, 128, "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bKfloor%d.%lx\r\n", listen_port, w->index,
                     w->branch++);
    return (size_t)n;
}

// The host:port of the Via line starting at `via` (its sent-by), as a destination.
static int sent_by(const char *via, const char *end, struct sockaddr_in *to) {
    const char *p = find(via, end, "UDP ", 4);
    if (!p) return -1;
    p += 4;
    const char *stop = p;
    while (stop < end && *stop != ';' && *stop != '\r' && *stop != ' ') stop++;
    const char *colon = memchr(p, ':', (size_t)(stop - p));
    char host[64];
    size_t host_length = (size_t)((colon ? colon : stop) - p);
    if (host_length == 0 || host_length >= sizeof host) return -1;
    memcpy(host, p, host_length);
    host[host_length] = 0;
    memset(to, 0, sizeof *to);
    to->sin_family = AF_INET;
    to->sin_port = htons(colon ? (uint16_t)atoi(colon + 1) : 5060);
    return inet_pton(AF_INET, host, &to->sin_addr) == 1 ? 0 : -1;
}

// Appends the header line that follows "\r\n" + `name` (with its CRLF) to `out` at `*n`.
static void copy_line(const char *message, const char *end, const char *name, char *out, size_t *n) {
    size_t length = strlen(name);
    const char *line = find(message, end, name, length);
    if (!line) return;
    const char *crlf = find(line + 2, end, "\r\n", 2);
    if (!crlf) return;
    memcpy(out + *n, line + 2, (size_t)(crlf - line));
    *n += (size_t)(crlf - line);
}

// What one received datagram becomes: the relayed datagram in `relayed` and, for an INVITE with --trying, a
// 100 Trying in `relayed` and the relayed INVITE in `trying` (sent in that order). Returns how many were made
// (0: dropped, 1, or 2).
static int handle(struct worker *w, const char *in, size_t length, const struct sockaddr_in *from,
                  struct out *relayed, struct out *trying) {
    const char *end = in + length;
    if (length > DATAGRAM) return 0;
    if (length > 8 && memcmp(in, "SIP/2.0 ", 8) == 0) {
        // A response: drop our Via (the first value), send to the next one's sent-by. The next may be on the
        // same line after a comma (sipp's built-in UAS writes all Vias on one line) or on the next line.
        const char *ours = find(in, end, "\r\nVia: ", 7);
        if (!ours) return 0;
        const char *line_end = find(ours + 2, end, "\r\n", 2);
        if (!line_end) return 0;
        const char *comma = memchr(ours + 7, ',', (size_t)(line_end - (ours + 7)));
        const char *cut_from, *cut_to;
        if (comma) {
            cut_from = ours + 7;
            cut_to = comma + 1;
            while (cut_to < line_end && *cut_to == ' ') cut_to++;
        } else {
            cut_from = ours + 2;
            cut_to = line_end + 2;
        }
        if (sent_by(cut_to, end, &relayed->to) != 0) return 0;
        size_t head = (size_t)(cut_from - in);
        memcpy(relayed->bytes, in, head);
        memcpy(relayed->bytes + head, cut_to, (size_t)(end - cut_to));
        relayed->length = length - (size_t)(cut_to - cut_from);
        return 1;
    }
    const char *line_end = find(in, end, "\r\n", 2);
    if (!line_end) return 0;
    // The 100 Trying goes out before the relayed INVITE, as a proxy sends it: a 180 relayed back by another
    // worker must not overtake it (sipp's UAC aborts a call whose 100 comes after its 180).
    int answers = want_trying && trying && length >= 7 && memcmp(in, "INVITE ", 7) == 0;
    if (answers) {
        struct out *swap = relayed;
        relayed = trying;
        trying = swap;
    }
    size_t head = (size_t)(line_end + 2 - in);
    memcpy(relayed->bytes, in, head);
    size_t via = our_via(w, relayed->bytes + head);
    memcpy(relayed->bytes + head + via, line_end + 2, (size_t)(end - (line_end + 2)));
    relayed->length = length + via;
    memset(&relayed->to, 0, sizeof relayed->to);
    relayed->to.sin_family = AF_INET;
    relayed->to.sin_port = htons((uint16_t)uas_port);
    relayed->to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!answers) return 1;
    char *t = trying->bytes;
    size_t n = 20;
    memcpy(t, "SIP/2.0 100 Trying\r\n", 20);
    copy_line(line_end, end, "\r\nVia: ", t, &n);
    copy_line(line_end, end, "\r\nFrom: ", t, &n);
    copy_line(line_end, end, "\r\nTo: ", t, &n);
    copy_line(line_end, end, "\r\nCall-ID: ", t, &n);
    copy_line(line_end, end, "\r\nCSeq: ", t, &n);
    memcpy(t + n, "Content-Length: 0\r\n\r\n", 21);
    trying->length = n + 21;
    trying->to = *from;
    return 2;
}

static int open_socket(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int one = 1, bytes = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)listen_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("floor: bind");
        exit(1);
    }
    return fd;
}

static void run_mmsg(struct worker *w) {
    char (*inputs)[DATAGRAM + 1] = malloc(sizeof(*inputs) * BATCH);
    struct mmsghdr in[BATCH], out[2 * BATCH];
    struct iovec in_vectors[BATCH], out_vectors[2 * BATCH];
    struct sockaddr_in sources[BATCH];
    while (!stopping) {
        for (int i = 0; i < BATCH; i++) {
            in_vectors[i] = (struct iovec){inputs[i], DATAGRAM + 1};
            in[i].msg_hdr = (struct msghdr){.msg_name = &sources[i], .msg_namelen = sizeof sources[i],
                                            .msg_iov = &in_vectors[i], .msg_iovlen = 1};
        }
        int got = recvmmsg(w->fd, in, BATCH, MSG_WAITFORONE, NULL);
        if (got < 0) {
            if (errno == EINTR) continue;
            perror("floor: recvmmsg");
            return;
        }
        int made = 0;
        for (int i = 0; i < got; i++)
            made += handle(w, inputs[i], in[i].msg_len, &sources[i], &w->outs[made], &w->outs[made + 1]);
        for (int i = 0; i < made; i++) {
            out_vectors[i] = (struct iovec){w->outs[i].bytes, w->outs[i].length};
            out[i].msg_hdr = (struct msghdr){.msg_name = &w->outs[i].to, .msg_namelen = sizeof w->outs[i].to,
                                             .msg_iov = &out_vectors[i], .msg_iovlen = 1};
        }
        for (int sent = 0; sent < made;) {
            int n = sendmmsg(w->fd, out + sent, (unsigned)(made - sent), 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            sent += n;
        }
    }
}

// Sends are tagged with their slot + 1; the multishot receive with 0.
static void run_ring(struct worker *w) {
    struct io_uring ring;
    struct io_uring_params params = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                                              IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE,
                                     .cq_entries = 8192};
    if (io_uring_queue_init_params(2048, &ring, &params) != 0) {
        perror("floor: io_uring_queue_init_params");
        exit(1);
    }
    size_t ring_bytes = BUFFERS * sizeof(struct io_uring_buf);
    struct io_uring_buf_ring *buffers_ring = aligned_alloc(4096, (ring_bytes + 4095) & ~(size_t)4095);
    char *buffers = malloc((size_t)BUFFERS * BUFFER_BYTES);
    io_uring_buf_ring_init(buffers_ring);
    struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)buffers_ring, .ring_entries = BUFFERS, .bgid = 0};
    if (io_uring_register_buf_ring(&ring, &reg, 0) != 0) {
        fprintf(stderr, "floor: io_uring_register_buf_ring failed\n");
        exit(1);
    }
    for (int i = 0; i < BUFFERS; i++)
        io_uring_buf_ring_add(buffers_ring, buffers + (size_t)i * BUFFER_BYTES, BUFFER_BYTES, (unsigned short)i,
                              io_uring_buf_ring_mask(BUFFERS), i);
    io_uring_buf_ring_advance(buffers_ring, BUFFERS);
    struct msghdr receive = {.msg_namelen = sizeof(struct sockaddr_in)};
    enum { SLOTS = 2048 };
    struct out *slots = malloc(sizeof(struct out) * SLOTS);
    struct msghdr *headers = calloc(SLOTS, sizeof *headers);
    struct iovec *vectors = calloc(SLOTS, sizeof *vectors);
    int *free_slots = malloc(sizeof(int) * SLOTS), free_count = SLOTS;
    for (int i = 0; i < SLOTS; i++) free_slots[i] = SLOTS - 1 - i;
    int armed = 0;
    while (!stopping) {
        if (!armed) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            io_uring_prep_recvmsg_multishot(sqe, w->fd, &receive, 0);
            sqe->flags |= IOSQE_BUFFER_SELECT;
            sqe->buf_group = 0;
            io_uring_sqe_set_data64(sqe, 0);
            armed = 1;
        }
        int rc = io_uring_submit_and_wait(&ring, 1);
        if (rc < 0 && rc != -EINTR) {
            fprintf(stderr, "floor: submit_and_wait: %s\n", strerror(-rc));
            return;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        int returned = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            uint64_t tag = io_uring_cqe_get_data64(cqe);
            if (tag != 0) {
                free_slots[free_count++] = (int)(tag - 1);
                continue;
            }
            if (!(cqe->flags & IORING_CQE_F_MORE)) armed = 0;
            if (cqe->res < 0 || !(cqe->flags & IORING_CQE_F_BUFFER)) continue;
            int id = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
            char *buffer = buffers + (size_t)id * BUFFER_BYTES;
            struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate(buffer, cqe->res, &receive);
            if (o && !(o->flags & MSG_TRUNC)) {
                const char *payload = io_uring_recvmsg_payload(o, &receive);
                size_t length = io_uring_recvmsg_payload_length(o, cqe->res, &receive);
                if (free_count >= 2) {
                    int pair[2] = {free_slots[free_count - 1], free_slots[free_count - 2]};
                    int n = handle(w, payload, length, io_uring_recvmsg_name(o), &slots[pair[0]], &slots[pair[1]]);
                    for (int i = 0; i < n; i++) {
                        int s = free_slots[--free_count];
                        vectors[s] = (struct iovec){slots[s].bytes, slots[s].length};
                        headers[s] = (struct msghdr){.msg_name = &slots[s].to, .msg_namelen = sizeof slots[s].to,
                                                     .msg_iov = &vectors[s], .msg_iovlen = 1};
                        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
                        if (!sqe) {
                            io_uring_submit(&ring);
                            sqe = io_uring_get_sqe(&ring);
                        }
                        io_uring_prep_sendmsg(sqe, w->fd, &headers[s], 0);
                        io_uring_sqe_set_data64(sqe, (uint64_t)s + 1);
                    }
                }
            }
            io_uring_buf_ring_add(buffers_ring, buffer, BUFFER_BYTES, (unsigned short)id,
                                  io_uring_buf_ring_mask(BUFFERS), returned++);
        }
        io_uring_buf_ring_advance(buffers_ring, returned);
        io_uring_cq_advance(&ring, seen);
    }
}

static void *work(void *argument) {
    struct worker *w = argument;
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(w->index % sysconf(_SC_NPROCESSORS_ONLN), &cpus);
    pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus);
    if (use_ring) run_ring(w); else run_mmsg(w);
    return NULL;
}

static void stop(int signal_number) {
    (void)signal_number;
    stopping = 1;
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: floor PORT UAS_PORT [--io mmsg|ring] [--trying] [--workers N]\n");
        return 2;
    }
    listen_port = atoi(argv[1]);
    uas_port = atoi(argv[2]);
    int workers = 2;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--trying") == 0) want_trying = 1;
        else if (strcmp(argv[i], "--io") == 0 && i + 1 < argc) use_ring = strcmp(argv[++i], "ring") == 0;
        else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) workers = atoi(argv[++i]);
        else {
            fprintf(stderr, "floor: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    pthread_t threads[64];
    struct worker *ws = calloc((size_t)workers, sizeof *ws);
    for (int i = 0; i < workers && i < 64; i++) {
        ws[i].index = i;
        ws[i].fd = open_socket();
    }
    fprintf(stderr, "floor: %d worker(s) on udp:127.0.0.1:%d, io %s%s, next hop 127.0.0.1:%d\n", workers,
            listen_port, use_ring ? "ring" : "mmsg", want_trying ? ", 100 Trying for INVITEs" : "", uas_port);
    for (int i = 0; i < workers && i < 64; i++) pthread_create(&threads[i], NULL, work, &ws[i]);
    for (int i = 0; i < workers && i < 64; i++) pthread_join(threads[i], NULL);
    return 0;
}
