/* The link layer of worlds, under every backend: the listener, hello
 * handshake with secret check, and per-link non-blocking frame transmission
 * and reception on the progress thread. Payloads go from and into the
 * callers' buffers directly (one sendmsg for header + payload; recv straight
 * into the posted buffer). */
#include "clock.h"
#include "world_int.h"

#include "bytes.h"
#include "err.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define IO_BUDGET (8u << 20) /* bytes per link per event: fairness between worlds */
#define MAX_IOV   32
#define UNEXP_MAX 4096 /* buffered header frames per link before the link stalls */

/* A connection accepted by the listener that has not said HELLO yet. */
struct mw_conn {
    int ev_kind; /* EV_CONN */
    struct mw_conn *next;
    int fd;
    char peer[64];
    int64_t accepted_ms;
    size_t got;
    mw_frame_hdr_t hdr;
    uint8_t buf[MW_FRAME_HDR_SIZE + MW_FRAME_META_MAX];
};

/* --- sockets -------------------------------------------------------------- */

static void tune_socket(mw_worlds_t *ctx, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (ctx->opts.socket_buffer_bytes > 0) {
        /* SO_*BUFFORCE works with CAP_NET_ADMIN beyond the sysctl maximum;
         * otherwise the kernel caps the plain option at net.core.*mem_max. */
        int v = ctx->opts.socket_buffer_bytes;
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) != 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) != 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
    }
}

static int parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[MW_FRAME_ADDR_MAX + 1];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || (size_t)(colon - addr) >= sizeof(host))
        return MW_EINVAL;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host) - 2);
        host[strlen(host) - 2] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || res == NULL)
        return MW_EINVAL;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return MW_OK;
}

static void epoll_set(mw_worlds_t *ctx, int fd, void *ptr, uint32_t *cur, uint32_t want)
{
    if (*cur == want)
        return;
    struct epoll_event ev = {.events = want, .data.ptr = ptr};
    epoll_ctl(ctx->epfd, *cur == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
    *cur = want;
}

int mw_link_listen(mw_worlds_t *ctx, char *errstr, size_t errstr_size)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char addr[MW_FRAME_ADDR_MAX + 1];
    const char *host = ctx->opts.listen_host;
    snprintf(addr, sizeof(addr), "%.100s:%d", host, ctx->opts.listen_port);
    if (parse_addr(addr, &ss, &len) != MW_OK)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "world.listen_host '%s' is not a numeric IP address", host);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return mw_errf(MW_EIO, errstr, errstr_size, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 512) != 0) {
        int e = errno;
        close(fd);
        return mw_errf(MW_EIO, errstr, errstr_size, "world listener on %s: %s", addr, strerror(e));
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    getsockname(fd, (struct sockaddr *)&bound, &blen);
    int port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                                : ((struct sockaddr_in6 *)&bound)->sin6_port);
    const char *adv = ctx->opts.advertise_host[0] ? ctx->opts.advertise_host : host;
    char hostname[256];
    if (!ctx->opts.advertise_host[0] && (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)) {
        /* advertise the hostname's first address: peers need a numeric one */
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
        adv = "127.0.0.1";
        if (gethostname(hostname, sizeof(hostname)) == 0 &&
            getaddrinfo(hostname, NULL, &hints, &res) == 0) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, hostname,
                      sizeof(hostname));
            freeaddrinfo(res);
            adv = hostname;
        }
    }
    if (strchr(adv, ':') != NULL)
        snprintf(ctx->address, sizeof(ctx->address), "[%.100s]:%d", adv, port);
    else
        snprintf(ctx->address, sizeof(ctx->address), "%.100s:%d", adv, port);
    ctx->listenfd = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ctx->listen_kind};
    epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, fd, &ev);
    return MW_OK;
}

/* --- accepted connections: HELLO and the secret check ----------------------- */

static void conn_close(mw_worlds_t *ctx, struct mw_conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(ctx->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
}

void mw_link_accept(mw_worlds_t *ctx)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(ctx->listenfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                mw_log(MW_LOG_WARN, "world", "accept: %s", strerror(errno));
            return;
        }
        struct mw_conn *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            return;
        }
        c->ev_kind = EV_CONN;
        c->fd = fd;
        c->accepted_ms = mw_now_ms();
        char host[INET6_ADDRSTRLEN] = "?";
        int port = 0;
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        snprintf(c->peer, sizeof(c->peer), "%s:%d", host, port);
        tune_socket(ctx, fd);
        c->next = ctx->conns;
        ctx->conns = c;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, fd, &ev);
    }
}

static mw_link_t *link_new(mw_world_t *w, int peer)
{
    mw_link_t *l = w->links[peer];
    if (l == NULL) {
        l = calloc(1, sizeof(*l));
        if (l == NULL)
            return NULL;
        w->links[peer] = l;
    } else {
        free(l->rx_meta);
        mw_op_t ping = l->ping;
        memset(l, 0, sizeof(*l));
        l->ping = ping;
    }
    l->ev_kind = EV_LINK;
    l->w = w;
    l->peer = peer;
    l->fd = -1;
    l->ping.kind = OP_SEND;
    l->ping.ftype = MW_FRAME_PING;
    l->ping.peer = peer;
    l->ping.hdr = l->ping.hdr_inline;
    l->ping.hdr_len = MW_FRAME_HDR_SIZE;
    l->rx_meta = malloc(MW_FRAME_META_MAX);
    if (l->rx_meta == NULL)
        return NULL;
    int64_t now = mw_now_ms();
    l->last_rx_ms = l->last_tx_ms = l->tx_progress_ms = now;
    l->ping_ms = w->ctx->opts.keepalive_ms;
    return l;
}

/* Refuses c: logged, closed; no world is touched. */
static void refuse(mw_worlds_t *ctx, struct mw_conn *c, const mw_frame_hello_t *h, const char *why)
{
    if (h != NULL)
        mw_log(MW_LOG_WARN, "world",
               "refused connection from %s for world %s epoch %lld rank %u: %s", c->peer, h->name,
               (long long)h->epoch, h->rank, why);
    else
        mw_log(MW_LOG_WARN, "world", "refused connection from %s: %s", c->peer, why);
    conn_close(ctx, c);
}

static void conn_hello(mw_worlds_t *ctx, struct mw_conn *c)
{
    mw_frame_hello_t h;
    char err[256];
    if (mw_frame_hello_decode(c->buf + MW_FRAME_HDR_SIZE, c->hdr.meta_len, &h, err, sizeof(err)) !=
        MW_OK) {
        refuse(ctx, c, NULL, err);
        return;
    }
    mw_world_t *w = mw_world_admit(ctx, &h, err, sizeof(err));
    if (w == NULL) {
        refuse(ctx, c, &h, err);
        return;
    }
    if (w->links[h.rank] != NULL && w->links[h.rank]->state != LINK_NONE) {
        refuse(ctx, c, &h, "rank already connected");
        return;
    }
    mw_link_t *l = link_new(w, (int)h.rank);
    if (l == NULL) {
        refuse(ctx, c, &h, "out of memory");
        return;
    }
    l->fd = c->fd;
    c->fd = -1;
    l->state = LINK_UP;
    l->rx_seq = 1;
    snprintf(l->addr, sizeof(l->addr), "%s", h.addr);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = l};
    epoll_ctl(ctx->epfd, EPOLL_CTL_MOD, l->fd, &ev);
    l->events = EPOLLIN | EPOLLRDHUP;
    mw_log(MW_LOG_DEBUG, "world", "world %s epoch %lld: rank %u connected from %s", w->name,
           (long long)w->epoch, h.rank, c->peer);
    if (h.keepalive_ms > 0 && h.keepalive_ms < l->ping_ms)
        l->ping_ms = h.keepalive_ms; /* the peer's watchdog is shorter than ours */
    uint8_t ack[4];
    mw_le32_put(ack, (uint32_t)ctx->opts.keepalive_ms);
    mw_link_send_control(l, MW_FRAME_HELLO_ACK, ack, sizeof(ack));
    l->last_rx_ms = l->last_tx_ms = mw_now_ms();
    mw_world_on_link_up(w, l);
}

void mw_link_conn_event(mw_worlds_t *ctx, struct mw_conn *c, uint32_t events)
{
    (void)events;
    if (c->fd < 0)
        return;
    size_t need = MW_FRAME_HDR_SIZE;
    if (c->got >= MW_FRAME_HDR_SIZE)
        need += c->hdr.meta_len;
    ssize_t n = recv(c->fd, c->buf + c->got, need - c->got, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        refuse(ctx, c, NULL, n == 0 ? "closed before HELLO" : strerror(errno));
        return;
    }
    if (n < 0)
        return;
    c->got += (size_t)n;
    if (c->got == MW_FRAME_HDR_SIZE) {
        char err[256];
        if (mw_frame_hdr_decode(c->buf, c->got, 0, &c->hdr, err, sizeof(err)) != MW_OK) {
            refuse(ctx, c, NULL, err);
            return;
        }
        if (c->hdr.type != MW_FRAME_HELLO || c->hdr.seq != 0) {
            refuse(ctx, c, NULL, "first frame is not HELLO");
            return;
        }
    }
    if (c->got > MW_FRAME_HDR_SIZE && c->got == MW_FRAME_HDR_SIZE + c->hdr.meta_len)
        conn_hello(ctx, c);
}

void mw_link_conns_tick(mw_worlds_t *ctx, int64_t now)
{
    for (struct mw_conn *c = ctx->conns; c != NULL; c = c->next)
        if (c->fd >= 0 && now - c->accepted_ms > ctx->opts.timeout_ms)
            refuse(ctx, c, NULL, "no HELLO within world.timeout_ms");
}

void mw_link_conns_free(mw_worlds_t *ctx, int all)
{
    struct mw_conn **pp = &ctx->conns;
    while (*pp != NULL) {
        struct mw_conn *c = *pp;
        if (c->fd < 0 || all) {
            conn_close(ctx, c);
            *pp = c->next;
            free(c);
        } else {
            pp = &c->next;
        }
    }
}

/* --- links ----------------------------------------------------------------- */

static void link_update_events(mw_link_t *l)
{
    if (l->fd < 0)
        return;
    uint32_t want = l->peer_closed ? 0 : EPOLLRDHUP;
    if (l->state == LINK_CONNECTING) {
        want |= EPOLLOUT;
    } else {
        if (l->phase != RX_WAIT)
            want |= EPOLLIN;
        if (l->txq != NULL)
            want |= EPOLLOUT;
    }
    epoll_set(l->w->ctx, l->fd, l, &l->events, want);
}

mw_link_t *mw_link_connect(mw_world_t *w, int peer, const char *addr, char *errstr,
                           size_t errstr_size)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (parse_addr(addr, &ss, &len) != MW_OK) {
        mw_errf(MW_EINVAL, errstr, errstr_size, "rank %d's address '%s' is not host:port", peer,
                addr);
        return NULL;
    }
    mw_link_t *l = link_new(w, peer);
    if (l == NULL) {
        mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    snprintf(l->addr, sizeof(l->addr), "%s", addr);
    l->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0) {
        mw_errf(MW_EIO, errstr, errstr_size, "socket: %s", strerror(errno));
        l->state = LINK_NONE;
        return NULL;
    }
    tune_socket(w->ctx, l->fd);
    l->state = LINK_CONNECTING;
    if (connect(l->fd, (struct sockaddr *)&ss, len) != 0 && errno != EINPROGRESS) {
        mw_errf(MW_EIO, errstr, errstr_size, "connect to rank %d at %s: %s", peer, addr,
                strerror(errno));
        close(l->fd);
        l->fd = -1;
        l->state = LINK_NONE;
        return NULL;
    }
    link_update_events(l);
    return l;
}

void mw_link_op_send(mw_op_t *op, int peer, uint8_t type, const uint8_t *meta, size_t meta_len,
                     const void *payload, uint64_t payload_len)
{
    mw_frame_hdr_t h = {.version = MW_FRAME_VERSION,
                        .type = type,
                        .meta_len = (uint32_t)meta_len,
                        .payload_len = payload_len};
    mw_frame_hdr_encode(&h, op->hdr);
    if (meta_len > 0)
        memcpy(op->hdr + MW_FRAME_HDR_SIZE, meta, meta_len);
    op->hdr_len = MW_FRAME_HDR_SIZE + meta_len;
    op->kind = OP_SEND;
    op->ftype = type;
    op->peer = peer;
    op->payload = payload;
    op->payload_len = payload_len;
}

void mw_link_op_recv(mw_op_t *op, int peer, uint8_t type, void *buf, uint64_t cap)
{
    op->kind = OP_RECV;
    op->ftype = type;
    op->peer = peer;
    op->buf = buf;
    op->cap = cap;
}

/* Appends op to the transmit queue, numbering its frame. */
static void txq_push(mw_link_t *l, mw_op_t *op)
{
    uint32_t seq = l->tx_seq++;
    mw_le32_put(op->hdr + 12, seq);
    op->next = NULL;
    op->off = 0;
    op->queued = 1;
    if (l->txq == NULL) {
        l->txq = op;
        l->tx_progress_ms = mw_now_ms();
    } else {
        l->txq_tail->next = op;
    }
    l->txq_tail = op;
}

static void link_tx(mw_link_t *l);
static void link_left(mw_link_t *l);

void mw_link_send_control(mw_link_t *l, uint8_t type, const uint8_t *meta, size_t meta_len)
{
    mw_op_t *op = calloc(1, sizeof(*op));
    if (op != NULL) {
        op->hdr = MW_FRAME_HDR_SIZE + meta_len <= sizeof(op->hdr_inline)
                      ? op->hdr_inline
                      : malloc(MW_FRAME_HDR_SIZE + meta_len);
        if (op->hdr == NULL) {
            free(op);
            op = NULL;
        }
    }
    if (op == NULL) {
        mw_world_break(l->w, MW_ENOMEM, "out of memory sending %s", mw_frame_type_name(type));
        return;
    }
    op->owned = 1;
    mw_link_op_send(op, l->peer, type, meta, meta_len, NULL, 0);
    txq_push(l, op);
    if (l->state != LINK_CONNECTING)
        link_tx(l);
}

static void link_fail(mw_link_t *l, int err, const char *what, int e)
{
    mw_world_t *w = l->w;
    if (l->state == LINK_CONNECTING || l->state == LINK_HELLO_SENT) {
        char why[200];
        snprintf(why, sizeof(why), "%s rank %d at %s: %s", what, l->peer, l->addr,
                 e ? strerror(e) : "connection closed");
        mw_world_on_connect_failed(w, l, why);
        return;
    }
    if (e == 0)
        mw_world_break(w, err, "rank %d closed the connection", l->peer);
    else
        mw_world_break(w, err, "%s rank %d failed: %s", what, l->peer, strerror(e));
}

static void link_tx(mw_link_t *l)
{
    mw_world_t *w = l->w;
    size_t budget = IO_BUDGET;
    while (l->txq != NULL && l->fd >= 0 && budget > 0) {
        struct iovec iov[MAX_IOV];
        int n = 0;
        size_t total = 0;
        for (mw_op_t *op = l->txq; op != NULL && n < MAX_IOV - 1 && total < budget; op = op->next) {
            if (op->off < op->hdr_len) {
                iov[n].iov_base = op->hdr + op->off;
                iov[n].iov_len = op->hdr_len - op->off;
                total += iov[n++].iov_len;
            }
            uint64_t poff = op->off > op->hdr_len ? op->off - op->hdr_len : 0;
            if (poff < op->payload_len) {
                uint64_t left = op->payload_len - poff;
                size_t room = total < budget ? budget - total : 0;
                if (room == 0)
                    break;
                iov[n].iov_base = (void *)(op->payload + poff);
                iov[n].iov_len = left < room ? (size_t)left : room;
                total += iov[n++].iov_len;
                if (iov[n - 1].iov_len < left)
                    break; /* stream order: nothing of the next frame before this one ends */
            }
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t r = sendmsg(l->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            link_fail(l, MW_EBROKEN, "sending to", errno);
            return;
        }
        int64_t now = mw_now_ms();
        l->last_tx_ms = l->tx_progress_ms = now;
        __atomic_fetch_add(&w->stats.bytes_sent, (uint64_t)r, __ATOMIC_RELAXED);
        budget -= (size_t)r < budget ? (size_t)r : budget;
        size_t left = (size_t)r;
        while (l->txq != NULL) {
            mw_op_t *op = l->txq;
            uint64_t need = op->hdr_len + op->payload_len - op->off;
            if (left < need) {
                op->off += left;
                break;
            }
            left -= need;
            op->off += need;
            l->txq = op->next;
            if (l->txq == NULL)
                l->txq_tail = NULL;
            op->queued = 0;
            __atomic_fetch_add(&w->stats.frames_sent, 1, __ATOMIC_RELAXED);
            if (op == &l->ping)
                __atomic_fetch_add(&w->stats.pings_sent, 1, __ATOMIC_RELAXED);
            else
                mw_world_op_done(w, op, MW_OK);
        }
        if ((size_t)r < total)
            break; /* the socket buffer is full */
    }
    link_update_events(l);
}

/* --- reception ------------------------------------------------------------- */

static mw_op_t *q_pop(mw_op_t **head, mw_op_t **tail)
{
    mw_op_t *op = *head;
    if (op != NULL) {
        *head = op->next;
        if (*head == NULL)
            *tail = NULL;
        op->next = NULL;
        op->queued = 0;
    }
    return op;
}

static void q_push(mw_op_t **head, mw_op_t **tail, mw_op_t *op)
{
    op->next = NULL;
    op->queued = 1;
    if (*head == NULL)
        *head = op;
    else
        (*tail)->next = op;
    *tail = op;
}

/* Matches the frame in l->rx_hdr (metadata read) with a posted receive.
 * Returns 1 when reception can continue, 0 when the link waits or broke. */
static int rx_match(mw_link_t *l)
{
    mw_world_t *w = l->w;
    mw_frame_hdr_t *h = &l->rx_hdr;
    switch (h->type) {
    case MW_FRAME_HEADER: {
        mw_op_t *op = q_pop(&l->recv_hdr_q, &l->recv_hdr_tail);
        if (op != NULL && h->payload_len > op->cap) {
            char e[400];
            snprintf(e, sizeof(e),
                     "world %s: header frame of %llu bytes from rank %d exceeds the receive "
                     "buffer of %llu bytes",
                     w->name, (unsigned long long)h->payload_len, l->peer,
                     (unsigned long long)op->cap);
            mw_world_req_done(w, op->req, MW_ETOOBIG, e);
            mw_world_op_done(w, op, MW_ETOOBIG);
            op = NULL;
            /* drop it: read into a buffer that is freed at the end */
            l->rx_unexp = malloc(sizeof(struct unexp) + h->payload_len);
            if (l->rx_unexp == NULL)
                goto nomem;
            ((struct unexp *)l->rx_unexp)->len = UINT32_MAX; /* marks "discard" */
        } else if (op == NULL) {
            if (l->unexp_count >= UNEXP_MAX) {
                l->phase = RX_WAIT;
                return 0;
            }
            l->rx_unexp = malloc(sizeof(struct unexp) + h->payload_len);
            if (l->rx_unexp == NULL)
                goto nomem;
            ((struct unexp *)l->rx_unexp)->len = (uint32_t)h->payload_len;
        }
        l->rx_op = op;
        break;
    }
    case MW_FRAME_TENSOR: {
        mw_op_t *op = q_pop(&l->recv_tensor_q, &l->recv_tensor_tail);
        if (op == NULL) {
            l->phase = RX_WAIT;
            return 0;
        }
        if (l->rx_nbytes > op->cap) {
            mw_world_break(w, MW_ETOOBIG,
                           "tensor of %llu bytes from rank %d exceeds the receive buffer of "
                           "%llu bytes",
                           (unsigned long long)l->rx_nbytes, l->peer, (unsigned long long)op->cap);
            mw_world_op_done(w, op, MW_ETOOBIG);
            return 0;
        }
        if (op->req != NULL)
            op->req->desc = l->rx_desc;
        l->rx_op = op;
        break;
    }
    case MW_FRAME_COLL: {
        mw_op_t *op = q_pop(&l->recv_coll_q, &l->recv_coll_tail);
        if (op == NULL) {
            l->phase = RX_WAIT;
            return 0;
        }
        uint64_t bytes = l->rx_coll.kind == MW_COLL_BARRIER ? 0 : l->rx_nbytes;
        if (l->rx_coll.seq != op->coll_seq || l->rx_coll.kind != op->coll_kind ||
            bytes != op->coll_expect) {
            mw_world_break(w, MW_EPROTO,
                           "collective mismatch: rank %d sent collective #%u (kind %u, %llu "
                           "bytes), this rank expects #%u (kind %u, %llu bytes)",
                           l->peer, l->rx_coll.seq, l->rx_coll.kind, (unsigned long long)bytes,
                           op->coll_seq, op->coll_kind, (unsigned long long)op->coll_expect);
            mw_world_op_done(w, op, MW_EPROTO);
            return 0;
        }
        l->rx_op = op;
        break;
    }
    default:
        break;
    }
    l->phase = RX_PAYLOAD;
    return 1;
nomem:
    mw_world_break(w, MW_ENOMEM, "out of memory buffering a frame from rank %d", l->peer);
    return 0;
}

static void rx_frame_done(mw_link_t *l)
{
    mw_world_t *w = l->w;
    __atomic_fetch_add(&w->stats.frames_received, 1, __ATOMIC_RELAXED);
    l->phase = RX_HDR;
    l->rx_got = 0;
    if (l->rx_op != NULL) {
        mw_op_t *op = l->rx_op;
        l->rx_op = NULL;
        if (op->req != NULL)
            __atomic_store_n(&op->req->bytes, l->rx_hdr.payload_len, __ATOMIC_RELAXED);
        op->off = l->rx_hdr.payload_len;
        mw_world_op_done(w, op, MW_OK);
    } else if (l->rx_unexp != NULL) {
        struct unexp *u = (struct unexp *)l->rx_unexp;
        l->rx_unexp = NULL;
        if (u->len == UINT32_MAX) {
            free(u);
        } else {
            u->next = NULL;
            if (l->unexp == NULL)
                l->unexp = u;
            else
                l->unexp_tail->next = u;
            l->unexp_tail = u;
            l->unexp_count++;
        }
    }
}

/* The frame's metadata is complete: act on control frames, match data frames. */
static int rx_begin(mw_link_t *l)
{
    mw_world_t *w = l->w;
    mw_frame_hdr_t *h = &l->rx_hdr;
    char err[256];
    if (mw_frame_check(h, l->rx_meta, err, sizeof(err)) != MW_OK) {
        mw_world_break(w, MW_EPROTO, "malformed %s frame from rank %d: %s",
                       mw_frame_type_name(h->type), l->peer, err);
        return 0;
    }
    switch (h->type) {
    case MW_FRAME_PING:
        rx_frame_done(l);
        return 1;
    case MW_FRAME_HELLO_ACK:
        if (l->state != LINK_HELLO_SENT)
            goto unexpected;
        uint32_t ka = mw_le32_get(l->rx_meta);
        if (ka > 0 && ka < l->ping_ms)
            l->ping_ms = ka;
        l->state = LINK_UP;
        rx_frame_done(l);
        l->last_rx_ms = l->last_tx_ms = mw_now_ms();
        mw_world_on_link_up(w, l);
        return l->fd >= 0;
    case MW_FRAME_PEERS: {
        if (l->peer != 0 || w->rank == 0 || w->peer_addrs != NULL)
            goto unexpected;
        w->peer_addrs = calloc((size_t)w->size, sizeof(*w->peer_addrs));
        if (w->peer_addrs == NULL) {
            mw_world_break(w, MW_ENOMEM, "out of memory");
            return 0;
        }
        int n = mw_frame_peers_decode(l->rx_meta, h->meta_len, w->peer_addrs, w->size, err,
                                      sizeof(err));
        if (n != w->size) {
            mw_world_break(w, MW_EPROTO, "bad PEERS frame from rank 0: %s",
                           n < 0 ? err : "wrong count");
            return 0;
        }
        rx_frame_done(l);
        mw_world_on_peers(w, w->peer_addrs, n);
        return l->fd >= 0;
    }
    case MW_FRAME_BYE:
        if (l->state != LINK_UP)
            goto unexpected;
        rx_frame_done(l);
        link_left(l);
        return 0;
    case MW_FRAME_HEADER:
        break;
    case MW_FRAME_TENSOR:
        mw_frame_tensor_meta_decode(l->rx_meta, h->meta_len, &l->rx_desc, &l->rx_nbytes, NULL, 0);
        break;
    case MW_FRAME_COLL:
        mw_frame_coll_meta_decode(l->rx_meta, h->meta_len, &l->rx_coll, &l->rx_nbytes, NULL, 0);
        l->rx_desc = l->rx_coll.desc;
        break;
    default:
        goto unexpected;
    }
    if (l->state != LINK_UP)
        goto unexpected;
    if (!rx_match(l))
        return 0;
    if (h->payload_len == 0)
        rx_frame_done(l);
    return 1;
unexpected:
    mw_world_break(w, MW_EPROTO, "unexpected %s frame from rank %d", mw_frame_type_name(h->type),
                   l->peer);
    return 0;
}

static void link_rx(mw_link_t *l)
{
    mw_world_t *w = l->w;
    size_t budget = IO_BUDGET;
    while (l->fd >= 0 && budget > 0 && l->phase != RX_WAIT) {
        uint8_t *dst;
        size_t want;
        if (l->phase == RX_HDR) {
            dst = l->rx_hdr_buf + l->rx_got;
            want = MW_FRAME_HDR_SIZE - l->rx_got;
        } else if (l->phase == RX_META) {
            dst = l->rx_meta + l->rx_got;
            want = l->rx_hdr.meta_len - l->rx_got;
        } else {
            uint64_t off = l->rx_got;
            uint64_t left = l->rx_hdr.payload_len - off;
            if (l->rx_op != NULL)
                dst = l->rx_op->buf + off;
            else
                dst = ((struct unexp *)l->rx_unexp)->data + off;
            want = left < budget ? (size_t)left : budget;
        }
        ssize_t n = recv(l->fd, dst, want, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                link_fail(l, MW_EBROKEN, "receiving from", errno);
            break;
        }
        if (n == 0) {
            link_fail(l, MW_EBROKEN, "receiving from", 0);
            break;
        }
        l->last_rx_ms = mw_now_ms();
        __atomic_fetch_add(&w->stats.bytes_received, (uint64_t)n, __ATOMIC_RELAXED);
        budget -= (size_t)n < budget ? (size_t)n : budget;
        l->rx_got += (size_t)n;
        if (l->phase == RX_HDR) {
            if (l->rx_got < MW_FRAME_HDR_SIZE)
                continue;
            char err[256];
            int rc =
                mw_frame_hdr_decode(l->rx_hdr_buf, MW_FRAME_HDR_SIZE, w->ctx->opts.max_tensor_bytes,
                                    &l->rx_hdr, err, sizeof(err));
            if (rc != MW_OK) {
                mw_world_break(w, rc, "bad frame from rank %d: %s", l->peer, err);
                break;
            }
            if (l->rx_hdr.seq != l->rx_seq) {
                mw_world_break(w, MW_EPROTO, "frame %u from rank %d, expected frame %u",
                               l->rx_hdr.seq, l->peer, l->rx_seq);
                break;
            }
            l->rx_seq++;
            l->rx_got = 0;
            if (l->rx_hdr.meta_len > 0) {
                l->phase = RX_META;
                continue;
            }
            if (!rx_begin(l))
                break;
        } else if (l->phase == RX_META) {
            if (l->rx_got < l->rx_hdr.meta_len)
                continue;
            l->rx_got = 0;
            if (!rx_begin(l))
                break;
        } else if (l->rx_got == l->rx_hdr.payload_len) {
            rx_frame_done(l);
        }
    }
    link_update_events(l);
}

/* A receive was posted or a buffered header consumed: resume a waiting link. */
static void rx_resume(mw_link_t *l)
{
    if (l->phase != RX_WAIT)
        return;
    l->phase = RX_META; /* re-match the frame whose metadata is already here */
    if (!rx_match(l)) {
        link_update_events(l);
        return;
    }
    if (l->rx_hdr.payload_len == 0)
        rx_frame_done(l);
    link_rx(l);
}

void mw_link_post(mw_link_t *l, mw_op_t *op)
{
    mw_world_t *w = l->w;
    if (l->state != LINK_UP) {
        char e[400];
        snprintf(e, sizeof(e), "world %s epoch %lld: rank %d left the world", w->name,
                 (long long)w->epoch, l->peer);
        mw_world_req_done(w, op->req, MW_ECLOSED, e);
        mw_world_op_done(w, op, MW_ECLOSED);
        return;
    }
    if (op->kind == OP_SEND) {
        txq_push(l, op);
        if (l->state == LINK_UP)
            link_tx(l);
        return;
    }
    switch (op->ftype) {
    case MW_FRAME_HEADER:
        if (l->unexp != NULL) {
            struct unexp *u = l->unexp;
            l->unexp = u->next;
            if (l->unexp == NULL)
                l->unexp_tail = NULL;
            l->unexp_count--;
            if (u->len > op->cap) {
                char e[400];
                snprintf(e, sizeof(e),
                         "world %s: header frame of %u bytes from rank %d exceeds the receive "
                         "buffer of %llu bytes",
                         w->name, u->len, l->peer, (unsigned long long)op->cap);
                mw_world_req_done(w, op->req, MW_ETOOBIG, e);
                mw_world_op_done(w, op, MW_ETOOBIG);
            } else {
                memcpy(op->buf, u->data, u->len);
                if (op->req != NULL)
                    op->req->bytes = u->len;
                mw_world_op_done(w, op, MW_OK);
            }
            free(u);
            if (l->phase == RX_WAIT && l->rx_hdr.type == MW_FRAME_HEADER)
                rx_resume(l);
            return;
        }
        q_push(&l->recv_hdr_q, &l->recv_hdr_tail, op);
        break;
    case MW_FRAME_TENSOR:
        q_push(&l->recv_tensor_q, &l->recv_tensor_tail, op);
        break;
    default:
        q_push(&l->recv_coll_q, &l->recv_coll_tail, op);
        break;
    }
    if (l->phase == RX_WAIT && l->rx_hdr.type == op->ftype)
        rx_resume(l);
}

void mw_link_event(mw_link_t *l, uint32_t events)
{
    if (l->fd < 0)
        return;
    if (l->state == LINK_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
            link_fail(l, MW_EBROKEN, "connecting to", err ? err : ECONNREFUSED);
            return;
        }
        l->state = LINK_HELLO_SENT;
        l->last_rx_ms = mw_now_ms();
        link_tx(l); /* the HELLO queued by the world */
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        link_rx(l);
    if (l->fd < 0)
        return;
    if ((events & EPOLLRDHUP) && l->phase == RX_WAIT && !l->peer_closed) {
        /* The peer shut down while this side waits for a receive to be
         * posted. If the waiting frame is complete in the socket, the peer
         * may have closed in order after its last frame: let the receive take
         * it (the EOF behind it breaks the world then). Otherwise nothing
         * more will come: break now. */
        int avail = 0;
        if (ioctl(l->fd, FIONREAD, &avail) == 0 && (uint64_t)avail >= l->rx_hdr.payload_len) {
            l->peer_closed = 1;
            link_update_events(l);
        } else {
            link_fail(l, MW_EBROKEN, "receiving from", 0);
            return;
        }
    }
    if ((events & (EPOLLERR | EPOLLHUP)) && l->fd >= 0 && !(events & EPOLLIN)) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        link_fail(l, MW_EBROKEN, "connection to", err ? err : ECONNRESET);
        return;
    }
    if ((events & EPOLLOUT) && l->txq != NULL)
        link_tx(l);
}

void mw_link_tick(mw_link_t *l, int64_t now)
{
    mw_world_t *w = l->w;
    mw_worlds_t *ctx = w->ctx;
    if (l->fd < 0 || l->state != LINK_UP)
        return;
    /* measured from the last byte moved, which precedes the failure: the
     * tick is subtracted so that detection lands within world.timeout_ms */
    int64_t limit = ctx->opts.timeout_ms - ctx->tick_ms;
    if (l->txq != NULL && now - l->tx_progress_ms > limit) {
        mw_world_break(w, MW_EBROKEN,
                       "send to rank %d made no progress for %lld ms (peer stopped, hung or "
                       "not receiving)",
                       l->peer, (long long)(now - l->tx_progress_ms));
        return;
    }
    if (l->phase != RX_WAIT && now - l->last_rx_ms > limit) {
        mw_world_break(w, MW_EBROKEN,
                       "nothing received from rank %d for %lld ms, not even a keepalive (peer "
                       "dead, stopped or partitioned)",
                       l->peer, (long long)(now - l->last_rx_ms));
        return;
    }
    if (l->txq == NULL && now - l->last_tx_ms >= l->ping_ms) {
        mw_frame_hdr_t h = {.version = MW_FRAME_VERSION, .type = MW_FRAME_PING};
        mw_frame_hdr_encode(&h, l->ping.hdr);
        l->ping.payload = NULL;
        l->ping.payload_len = 0;
        txq_push(l, &l->ping);
        link_tx(l);
    }
}

/* Fails every operation queued on l with "rank p left the world". */
static void fail_queue(mw_world_t *w, mw_op_t *op, const char *e)
{
    for (; op != NULL; op = op->next)
        mw_world_req_done(w, op->req, MW_ECLOSED, e);
}

static void link_left(mw_link_t *l)
{
    mw_world_t *w = l->w;
    char e[400];
    snprintf(e, sizeof(e), "world %s epoch %lld: rank %d left the world", w->name,
             (long long)w->epoch, l->peer);
    mw_log(MW_LOG_INFO, "world", "%s", e);
    fail_queue(w, l->txq, e);
    fail_queue(w, l->recv_hdr_q, e);
    fail_queue(w, l->recv_tensor_q, e);
    fail_queue(w, l->recv_coll_q, e);
    if (l->rx_op != NULL)
        mw_world_req_done(w, l->rx_op->req, MW_ECLOSED, e);
    mw_link_close(l, MW_ECLOSED);
    mw_world_on_peer_left(w);
}

void mw_link_bye(mw_link_t *l)
{
    if (l->fd < 0 || l->state != LINK_UP || l->txq != NULL)
        return;
    uint8_t frame[MW_FRAME_HDR_SIZE];
    mw_frame_hdr_t h = {.version = MW_FRAME_VERSION, .type = MW_FRAME_BYE, .seq = l->tx_seq++};
    mw_frame_hdr_encode(&h, frame);
    ssize_t n = send(l->fd, frame, sizeof(frame), MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n; /* best effort: without it the peer sees a plain close */
}

void mw_link_close(mw_link_t *l, int rc)
{
    mw_world_t *w = l->w;
    if (l->fd >= 0) {
        epoll_ctl(w->ctx->epfd, EPOLL_CTL_DEL, l->fd, NULL);
        close(l->fd);
        l->fd = -1;
    }
    if (l->state != LINK_NONE)
        l->state = LINK_CLOSED;
    l->events = 0;
    mw_op_t *op;
    while ((op = q_pop(&l->txq, &l->txq_tail)) != NULL)
        if (op != &l->ping)
            mw_world_op_done(w, op, rc);
    if (l->rx_op != NULL) {
        op = l->rx_op;
        l->rx_op = NULL;
        mw_world_op_done(w, op, rc);
    }
    while ((op = q_pop(&l->recv_hdr_q, &l->recv_hdr_tail)) != NULL)
        mw_world_op_done(w, op, rc);
    while ((op = q_pop(&l->recv_tensor_q, &l->recv_tensor_tail)) != NULL)
        mw_world_op_done(w, op, rc);
    while ((op = q_pop(&l->recv_coll_q, &l->recv_coll_tail)) != NULL)
        mw_world_op_done(w, op, rc);
    free(l->rx_unexp);
    l->rx_unexp = NULL;
    while (l->unexp != NULL) {
        struct unexp *u = l->unexp;
        l->unexp = u->next;
        free(u);
    }
    l->unexp_tail = NULL;
    l->unexp_count = 0;
    l->phase = RX_HDR;
    l->rx_got = 0;
}

void mw_link_reset(mw_link_t *l)
{
    mw_link_close(l, MW_EAGAIN);
    l->state = LINK_NONE;
}

int mw_link_is_up(const mw_link_t *l)
{
    return l != NULL && l->state == LINK_UP;
}

void mw_link_free(mw_link_t *l)
{
    if (l == NULL)
        return;
    if (l->fd >= 0)
        mw_link_close(l, MW_ECLOSED);
    free(l->rx_meta);
    free(l);
}
