/* Host side of the vsock end-to-end tests (see vsock_host.h). */
#include "tests/e2e/vsock_host.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK     65536
#define MAX_CONNS 1100

double vh_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *vm_thread(void *arg)
{
	struct vh_vm *vm = arg;
	vm->ret = harness_run(&vm->argv, &vm->opts, &vm->res);
	vm->done = true;
	return NULL;
}

int vh_vm_start(struct vh_vm *vm)
{
	vm->done = false;
	int e = pthread_create(&vm->thread, NULL, vm_thread, vm);
	if (e)
		return -e;
	vm->started = true;
	return 0;
}

int vh_vm_join(struct vh_vm *vm)
{
	if (vm->started) {
		pthread_join(vm->thread, NULL);
		vm->started = false;
	}
	return vm->ret;
}

/* Pattern of VH_PERIOD + CHUNK bytes, so any phase has CHUNK contiguous bytes. */
static uint8_t *pattern;
static pthread_once_t pattern_once = PTHREAD_ONCE_INIT;

static void pattern_init(void)
{
	pattern = malloc(VH_PERIOD + CHUNK);
	if (!pattern)
		abort();
	uint64_t x = 0x2545f4914f6cdd1dull;
	for (size_t i = 0; i < VH_PERIOD; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		pattern[i] = (uint8_t)(x >> 24);
	}
	memcpy(pattern + VH_PERIOD, pattern, CHUNK);
}

const uint8_t *vh_pattern(void)
{
	pthread_once(&pattern_once, pattern_init);
	return pattern;
}

static int uds_connect(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	strcpy(a.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

/* Reads one line (up to len - 1 bytes, '\n' kept out) within ms; its length, or -1. */
static int read_line(int fd, char *buf, size_t len, int ms)
{
	size_t n = 0;
	double end = vh_now() + ms / 1000.0;
	while (n + 1 < len) {
		int left = (int)((end - vh_now()) * 1000);
		struct pollfd p = {fd, POLLIN, 0};
		if (left <= 0 || poll(&p, 1, left) <= 0)
			return -1;
		char ch;
		ssize_t r = read(fd, &ch, 1);
		if (r <= 0)
			return -1;
		if (ch == '\n') {
			buf[n] = '\0';
			return (int)n;
		}
		buf[n++] = ch;
	}
	return -1;
}

static bool write_all(int fd, const void *p, size_t n)
{
	const char *b = p;
	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		b += w;
		n -= (size_t)w;
	}
	return true;
}

bool vh_client_connect(const char *uds, struct vh_client *c, double wait_s)
{
	double end = vh_now() + wait_s;
	c->fd = -1;
	for (;;) {
		int fd = uds_connect(uds);
		if (fd >= 0) {
			char line[64];
			int n = snprintf(line, sizeof(line), "CONNECT %u\n", c->port);
			bool w = true;
			if (c->one_byte_line) {
				for (int i = 0; i < n && w; i++) {
					w = write_all(fd, line + i, 1);
					usleep(20000);
				}
			} else {
				w = write_all(fd, line, (size_t)n);
			}
			char reply[64];
			if (w && read_line(fd, reply, sizeof(reply), 4000) > 0) {
				unsigned hp;
				if (sscanf(reply, "OK %u", &hp) == 1) {
					c->fd = fd;
					c->host_port = hp;
					c->connected = true;
					c->t_connect = vh_now();
					return true;
				}
				snprintf(c->why, sizeof(c->why), "reply \"%.40s\"", reply);
			} else {
				snprintf(c->why, sizeof(c->why), "no OK line (closed or timed out)");
			}
			close(fd);
		} else {
			snprintf(c->why, sizeof(c->why), "connect: %s", strerror(-fd));
		}
		if (vh_now() > end)
			return false;
		usleep(200000);
	}
}

unsigned vh_clients_run(struct vh_client *c, unsigned n, double timeout_s)
{
	const uint8_t *pat = vh_pattern();
	struct pollfd *p = calloc(n, sizeof(*p));
	uint8_t *buf = malloc(CHUNK);
	if (!p || !buf) {
		free(p);
		free(buf);
		return 0;
	}
	for (unsigned i = 0; i < n; i++)
		if (c[i].fd >= 0)
			fcntl(c[i].fd, F_SETFL, fcntl(c[i].fd, F_GETFL) | O_NONBLOCK);
	double end = vh_now() + timeout_s;
	unsigned ok = 0;
	for (;;) {
		unsigned live = 0;
		for (unsigned i = 0; i < n; i++) {
			struct vh_client *k = &c[i];
			p[i] = (struct pollfd){-1, 0, 0};
			if (k->fd < 0 || k->failed || k->eof)
				continue;
			live++;
			p[i].fd = k->fd;
			p[i].events = POLLIN | (k->sent < k->bytes ? POLLOUT : 0);
		}
		if (!live)
			break;
		int left = (int)((end - vh_now()) * 1000);
		if (left <= 0)
			break;
		if (poll(p, n, left > 1000 ? 1000 : left) < 0 && errno != EINTR)
			break;
		for (unsigned i = 0; i < n; i++) {
			struct vh_client *k = &c[i];
			if (p[i].fd < 0 || !p[i].revents)
				continue;
			/* Stream i starts at its own phase of the pattern. */
			uint64_t phase = (uint64_t)i * 7919;
			if ((p[i].revents & POLLOUT) && k->sent < k->bytes) {
				uint64_t want = k->bytes - k->sent;
				size_t chunk = want > CHUNK ? CHUNK : (size_t)want;
				ssize_t w = send(k->fd, pat + (phase + k->sent) % VH_PERIOD, chunk, MSG_NOSIGNAL);
				if (w > 0) {
					k->sent += (uint64_t)w;
					if (k->sent == k->bytes)
						shutdown(k->fd, SHUT_WR);
				} else if (w < 0 && errno != EAGAIN) {
					k->failed = true;
					snprintf(k->why, sizeof(k->why), "write: %s", strerror(errno));
				}
			}
			if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t r = read(k->fd, buf, CHUNK);
				if (r > 0) {
					if (k->received + (uint64_t)r > k->bytes) {
						k->mismatch = true;
						k->mismatch_at = k->received + 1;
					} else if (!k->mismatch &&
					           memcmp(buf, pat + (phase + k->received) % VH_PERIOD,
					                  (size_t)r)) {
						k->mismatch = true;
						for (ssize_t j = 0; j < r; j++)
							if (buf[j] !=
							    pat[(phase + k->received + (uint64_t)j) % VH_PERIOD]) {
								k->mismatch_at = k->received + (uint64_t)j + 1;
								break;
							}
					}
					k->received += (uint64_t)r;
				} else if (r == 0) {
					k->eof = true;
					k->t_done = vh_now();
				} else if (errno != EAGAIN) {
					k->failed = true;
					snprintf(k->why, sizeof(k->why), "read: %s", strerror(errno));
				}
			}
		}
	}
	for (unsigned i = 0; i < n; i++) {
		struct vh_client *k = &c[i];
		bool good = k->connected && k->eof && !k->failed && !k->mismatch &&
		            k->received == k->bytes && k->sent == k->bytes;
		if (!good && !k->why[0])
			snprintf(k->why, sizeof(k->why), "sent %llu received %llu eof %d mismatch %d",
			         (unsigned long long)k->sent, (unsigned long long)k->received, k->eof,
			         k->mismatch);
		ok += good;
		if (k->fd >= 0)
			close(k->fd);
		k->fd = -1;
	}
	free(p);
	free(buf);
	return ok;
}

bool vh_garbage_closed(const char *uds, const char *bytes, size_t len, double wait_s, char *why,
                       size_t why_len)
{
	int fd = -1;
	double end = vh_now() + wait_s;
	while ((fd = uds_connect(uds)) < 0 && vh_now() < end)
		usleep(100000);
	if (fd < 0) {
		snprintf(why, why_len, "connect: %s", strerror(-fd));
		return false;
	}
	bool closed = false;
	if (write_all(fd, bytes, len)) {
		char b[256];
		for (;;) {
			struct pollfd p = {fd, POLLIN, 0};
			int left = (int)((end - vh_now()) * 1000);
			if (left <= 0 || poll(&p, 1, left) <= 0) {
				snprintf(why, why_len, "still open after %.1f s", wait_s);
				break;
			}
			ssize_t r = read(fd, b, sizeof(b));
			if (r <= 0) {
				closed = true;
				break;
			}
			/* An OK reply to garbage is a failure; anything else is noted. */
			snprintf(why, why_len, "device answered \"%.*s\"", (int)(r > 40 ? 40 : r), b);
		}
	} else {
		closed = true; /* closed before we even finished writing */
	}
	close(fd);
	return closed;
}

/* ---- listeners ---- */

struct lconn {
	int fd;
	uint8_t *buf; /* ECHO: CHUNK bytes; DELAYED: grows */
	size_t len, off, cap;
	uint64_t out;
	bool eof;
};

static int listen_at(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	strcpy(a.sun_path, path);
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1024) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

static void lconn_close(struct vh_listener *l, struct lconn *k)
{
	close(k->fd);
	free(k->buf);
	*k = (struct lconn){.fd = -1};
	l->closed++;
}

/* One step of connection k; false when it is finished. */
static bool lconn_step(struct vh_listener *l, struct lconn *k, short rev)
{
	if (l->mode == VH_SOURCE) {
		const uint8_t *pat = vh_pattern();
		if (rev & (POLLERR | POLLHUP))
			return false;
		uint64_t left = l->source_bytes - k->out;
		ssize_t w = send(k->fd, pat + k->out % VH_PERIOD, left > CHUNK ? CHUNK : left, MSG_NOSIGNAL);
		if (w > 0) {
			k->out += (uint64_t)w;
			l->bytes_out += (uint64_t)w;
		} else if (w < 0 && errno != EAGAIN) {
			l->errors++;
			return false;
		}
		return k->out < l->source_bytes;
	}
	if ((rev & POLLOUT) && k->off < k->len && (l->mode == VH_ECHO || k->eof)) {
		ssize_t w = send(k->fd, k->buf + k->off, k->len - k->off, MSG_NOSIGNAL);
		if (w > 0) {
			k->off += (size_t)w;
			l->bytes_out += (uint64_t)w;
			if (k->off == k->len && l->mode == VH_ECHO)
				k->off = k->len = 0;
		} else if (w < 0 && errno != EAGAIN) {
			l->errors++;
			return false;
		}
	}
	if ((rev & (POLLIN | POLLHUP | POLLERR)) && !k->eof) {
		if (k->len == k->cap) {
			if (l->mode != VH_DELAYED && l->mode != VH_ECHO)
				k->len = 0;
			else if (l->mode == VH_DELAYED && k->cap < (64u << 20)) {
				size_t nc = k->cap * 2;
				uint8_t *nb = realloc(k->buf, nc);
				if (!nb)
					return false;
				k->buf = nb;
				k->cap = nc;
			}
		}
		if (k->len < k->cap) {
			ssize_t r = read(k->fd, k->buf + k->len, k->cap - k->len);
			if (r > 0) {
				l->bytes_in += (uint64_t)r;
				if (l->mode == VH_ECHO || l->mode == VH_DELAYED)
					k->len += (size_t)r;
			} else if (r == 0) {
				k->eof = true;
			} else if (errno != EAGAIN) {
				l->errors += errno != ECONNRESET;
				return false;
			}
		}
	}
	return !(k->eof && k->off == k->len);
}

static void *listener_thread(void *arg)
{
	struct vh_listener *l = arg;
	struct lconn *ks = calloc(MAX_CONNS, sizeof(*ks));
	struct pollfd *p = calloc(MAX_CONNS + 1, sizeof(*p));
	if (!ks || !p) {
		l->errors++;
		free(ks);
		free(p);
		return NULL;
	}
	unsigned n = 0, open = 0;
	while (!l->stop) {
		p[0] = (struct pollfd){l->fd, POLLIN, 0};
		for (unsigned i = 0; i < n; i++) {
			struct lconn *k = &ks[i];
			short ev = 0;
			if (k->fd >= 0) {
				if (l->mode != VH_STALL && !k->eof &&
				    (l->mode != VH_ECHO || k->len < k->cap))
					ev |= POLLIN;
				if (l->mode == VH_SOURCE || (k->off < k->len && (l->mode == VH_ECHO || k->eof)))
					ev |= POLLOUT;
			}
			p[i + 1] = (struct pollfd){k->fd, ev, 0};
		}
		if (poll(p, n + 1, 100) < 0 && errno != EINTR)
			break;
		if (p[0].revents & POLLIN) {
			int fd;
			while ((fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
				unsigned i = 0;
				while (i < n && ks[i].fd >= 0)
					i++;
				if (i == MAX_CONNS) {
					close(fd);
					l->errors++;
					continue;
				}
				if (i == n)
					n++;
				size_t cap = CHUNK;
				ks[i] = (struct lconn){.fd = fd, .buf = malloc(cap), .cap = cap};
				l->accepted++;
				if (++open > l->max_open)
					l->max_open = open;
			}
		}
		for (unsigned i = 0; i < n; i++) {
			struct lconn *k = &ks[i];
			short rev = p[i + 1].revents;
			if (k->fd < 0 || p[i + 1].fd != k->fd)
				continue;
			if (l->mode == VH_SOURCE && !rev)
				continue;
			if (!rev)
				continue;
			if (!lconn_step(l, k, rev)) {
				lconn_close(l, k);
				open--;
			}
		}
	}
	for (unsigned i = 0; i < n; i++)
		if (ks[i].fd >= 0)
			lconn_close(l, &ks[i]);
	free(ks);
	free(p);
	return NULL;
}

int vh_listener_start(struct vh_listener *l, const char *uds, uint32_t port, enum vh_mode mode)
{
	vh_pattern();
	enum vh_mode m = mode;
	uint64_t sb = l->source_bytes;
	memset(l, 0, sizeof(*l));
	l->mode = m;
	l->source_bytes = sb;
	snprintf(l->path, sizeof(l->path), "%s_%u", uds, port);
	l->fd = listen_at(l->path);
	if (l->fd < 0)
		return l->fd;
	int e = pthread_create(&l->thread, NULL, listener_thread, l);
	if (e) {
		close(l->fd);
		return -e;
	}
	l->started = true;
	return 0;
}

void vh_listener_stop(struct vh_listener *l)
{
	if (!l->started)
		return;
	l->stop = true;
	pthread_join(l->thread, NULL);
	close(l->fd);
	unlink(l->path);
	l->started = false;
}

pid_t vh_killer_start(const char *uds, uint32_t port, uint64_t kill_after)
{
	char path[128];
	snprintf(path, sizeof(path), "%s_%u", uds, port);
	int fd = listen_at(path);
	if (fd < 0)
		return fd;
	pid_t pid = fork();
	if (pid < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	if (pid == 0) {
		alarm(60); /* never outlive a stuck test */
		struct pollfd p = {fd, POLLIN, 0};
		poll(&p, 1, 60000);
		int c = accept(fd, NULL, NULL);
		if (c < 0)
			_exit(2);
		char buf[CHUNK];
		uint64_t got = 0;
		while (got < kill_after) {
			ssize_t r = read(c, buf, sizeof(buf));
			if (r <= 0)
				_exit(3);
			got += (uint64_t)r;
		}
		raise(SIGKILL); /* the peer vanishes with its socket open */
		_exit(4);
	}
	close(fd);
	return pid;
}

bool vh_killer_wait(pid_t pid, double timeout_s)
{
	double end = vh_now() + timeout_s;
	int st = 0;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
		if (r < 0 || vh_now() > end)
			break;
		usleep(50000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return false;
}
