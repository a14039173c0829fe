/*
 * antrieb guest agent, fast path. Speaks the same JSON lines as agent.py on the
 * virtio-serial port "agent"; handles `ping` and `identity` itself and hands every other
 * request to `agent.py --one` (not on any critical path).
 *
 * Why C: a freshly restored clone under TCG translates every guest instruction it runs
 * for the first time. The identity request is the critical path of a cluster coming up,
 * and a Python interpreter's code paths cost more to translate than this whole file.
 * Static, libc only, so one binary serves every Debian release.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/random.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RUN_DIR "/run/antrieb"
#define STATE_FILE "/var/lib/antrieb/identity.json"
#define PY_AGENT "/usr/local/lib/antrieb/agent.py"
#define MAXLINE (1 << 20)

/* ---- a minimal JSON reader: enough for flat objects with one level of nesting ---- */

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* Decode the JSON string starting at p (at the opening quote) into out; returns the
 * position after the closing quote, or NULL. Handles the escapes json.dumps emits. */
static const char *read_string(const char *p, char *out, size_t cap) {
    size_t n = 0;
    if (*p != '"') return NULL;
    for (p++; *p && *p != '"'; p++) {
        char c = *p;
        if (c == '\\') {
            p++;
            switch (*p) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': { /* \u00XX only: our payloads are ASCII */
                unsigned v = 0;
                if (sscanf(p + 1, "%4x", &v) != 1) return NULL;
                c = (char)(v < 128 ? v : '?');
                p += 4;
                break;
            }
            case 0: return NULL;
            default: c = *p; /* \" \\ \/ */
            }
        }
        if (n + 1 < cap) out[n++] = c;
    }
    if (*p != '"') return NULL;
    out[n] = 0;
    return p + 1;
}

/* Skip any JSON value (string, number, literal, object, array). */
static const char *skip_value(const char *p) {
    p = skip_ws(p);
    if (*p == '"') {
        for (p++; *p && *p != '"'; p++)
            if (*p == '\\' && p[1]) p++;
        return *p ? p + 1 : NULL;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; *p; p++) {
            if (*p == '"') {
                p = skip_value(p);
                if (!p) return NULL;
                p--;
            } else if (*p == '{' || *p == '[') depth++;
            else if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
        }
        return NULL;
    }
    while (*p && *p != ',' && *p != '}' && *p != ']') p++;
    return p;
}

/* Find key in the object at obj; returns a pointer to its value or NULL. */
static const char *find_key(const char *obj, const char *key) {
    static char name[256];
    const char *p = skip_ws(obj);
    if (*p != '{') return NULL;
    p = skip_ws(p + 1);
    while (*p == '"') {
        p = read_string(p, name, sizeof name);
        if (!p) return NULL;
        p = skip_ws(p);
        if (*p != ':') return NULL;
        p = skip_ws(p + 1);
        if (strcmp(name, key) == 0) return p;
        p = skip_value(p);
        if (!p) return NULL;
        p = skip_ws(p);
        if (*p == ',') p = skip_ws(p + 1);
    }
    return NULL;
}

static int get_str(const char *obj, const char *key, char *out, size_t cap) {
    const char *v = find_key(obj, key);
    return v && read_string(v, out, cap) ? 0 : -1;
}

static double get_num(const char *obj, const char *key, double dflt) {
    const char *v = find_key(obj, key);
    return v && (*v == '-' || (*v >= '0' && *v <= '9')) ? strtod(v, NULL) : dflt;
}

static int get_bool(const char *obj, const char *key, int dflt) {
    const char *v = find_key(obj, key);
    if (!v) return dflt;
    return strncmp(v, "true", 4) == 0 ? 1 : strncmp(v, "false", 5) == 0 ? 0 : dflt;
}

/* ---- writing JSON ---- */

static char *out;
static size_t out_len, out_cap;

static void put(const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(out + out_len, out_cap - out_len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < out_cap - out_len) {
            out_len += n;
            return;
        }
        out_cap = out_cap * 2 + (n > 0 ? n : 0) + 64;
        out = realloc(out, out_cap);
    }
}

static void put_escaped(const char *s) {
    put("\"");
    for (; *s; s++) {
        unsigned char c = *s;
        if (c == '"' || c == '\\') put("\\%c", c);
        else if (c == '\n') put("\\n");
        else if (c < 0x20) put("\\u%04x", c);
        else put("%c", c);
    }
    put("\"");
}

/* ---- identity ---- */

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int write_file(const char *path, const char *data, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return -1;
    fchmod(fd, mode);
    size_t len = strlen(data), done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n <= 0) { close(fd); return -1; }
        done += n;
    }
    return close(fd);
}

static int nl_request(int sock, struct nlmsghdr *msg) {
    static unsigned seq;
    char buf[4096];
    msg->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    msg->nlmsg_seq = ++seq;
    if (send(sock, msg, msg->nlmsg_len, 0) < 0) return -errno;
    ssize_t n = recv(sock, buf, sizeof buf, 0);
    if (n < (ssize_t)sizeof(struct nlmsghdr)) return -EIO;
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    if (h->nlmsg_type == NLMSG_ERROR) return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
    return 0;
}

static void add_attr(struct nlmsghdr *msg, int type, const void *data, int len) {
    struct rtattr *rta = (struct rtattr *)((char *)msg + NLMSG_ALIGN(msg->nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = RTA_LENGTH(len);
    memcpy(RTA_DATA(rta), data, len);
    msg->nlmsg_len = NLMSG_ALIGN(msg->nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

static int nl_address(int sock, int add, int index, struct in_addr ip, int prefix) {
    struct { struct nlmsghdr h; struct ifaddrmsg a; char attrs[64]; } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
    req.h.nlmsg_type = add ? RTM_NEWADDR : RTM_DELADDR;
    req.h.nlmsg_flags = add ? NLM_F_CREATE | NLM_F_REPLACE : 0;
    req.a.ifa_family = AF_INET;
    req.a.ifa_prefixlen = prefix;
    req.a.ifa_index = index;
    struct in_addr brd = ip;
    brd.s_addr |= htonl(prefix >= 32 ? 0 : (0xffffffffu >> prefix));
    add_attr(&req.h, IFA_LOCAL, &ip, 4);
    add_attr(&req.h, IFA_ADDRESS, &ip, 4);
    add_attr(&req.h, IFA_BROADCAST, &brd, 4);
    return nl_request(sock, &req.h);
}

static int nl_default_route(int sock, int index, struct in_addr gw) {
    struct { struct nlmsghdr h; struct rtmsg r; char attrs[64]; } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
    req.h.nlmsg_type = RTM_NEWROUTE;
    req.h.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
    req.r.rtm_family = AF_INET;
    req.r.rtm_table = RT_TABLE_MAIN;
    req.r.rtm_protocol = RTPROT_BOOT;
    req.r.rtm_scope = RT_SCOPE_UNIVERSE;
    req.r.rtm_type = RTN_UNICAST;
    add_attr(&req.h, RTA_GATEWAY, &gw, 4);
    add_attr(&req.h, RTA_OIF, &index, 4);
    return nl_request(sock, &req.h);
}

static int set_mac_up(const char *dev, const char *mac) {
    struct ifreq ifr;
    unsigned b[6];
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), rc = 0;
    if (s < 0) return -errno;
    if (sscanf(mac, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6) {
        close(s);
        return -EINVAL;
    }
    memset(&ifr, 0, sizeof ifr);
    if (strlen(dev) >= IFNAMSIZ) { close(s); return -EINVAL; }
    memcpy(ifr.ifr_name, dev, strlen(dev));
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) { rc = -errno; goto done; }
    short flags = ifr.ifr_flags;
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    for (int i = 0; i < 6; i++) ifr.ifr_hwaddr.sa_data[i] = (char)b[i];
    if (ioctl(s, SIOCSIFHWADDR, &ifr) < 0) { /* no live MAC change: down, change, up */
        struct ifreq f = ifr;
        f.ifr_flags = flags & ~IFF_UP;
        ioctl(s, SIOCSIFFLAGS, &f);
        if (ioctl(s, SIOCSIFHWADDR, &ifr) < 0) { rc = -errno; goto done; }
    }
    ifr.ifr_flags = flags | IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) rc = -errno;
done:
    close(s);
    return rc;
}

static char current_ip[64];
static int current_prefix;

static double t_mac, t_addr, t_route; /* seconds into configure_network, for tuning */
static double mono(void);

static int configure_network(const char *net, char *err, size_t errcap) {
    double t0 = mono();
    char dev[IFNAMSIZ], mac[32], ip[64], gw[64];
    int prefix = (int)get_num(net, "prefix", 24), rc;
    struct in_addr addr, gwaddr, old;
    if (get_str(net, "dev", dev, sizeof dev) || get_str(net, "mac", mac, sizeof mac) ||
        get_str(net, "ip", ip, sizeof ip) || get_str(net, "gateway", gw, sizeof gw) ||
        !inet_aton(ip, &addr) || !inet_aton(gw, &gwaddr)) {
        snprintf(err, errcap, "bad net settings");
        return -1;
    }
    if ((rc = set_mac_up(dev, mac)) < 0) {
        snprintf(err, errcap, "mac: %s", strerror(-rc));
        return -1;
    }
    t_mac = mono() - t0;
    int index = if_nametoindex(dev);
    int sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (!index || sock < 0) {
        snprintf(err, errcap, "no %s or no netlink", dev);
        if (sock >= 0) close(sock);
        return -1;
    }
    if (current_ip[0] && (strcmp(current_ip, ip) || current_prefix != prefix) &&
        inet_aton(current_ip, &old))
        nl_address(sock, 0, index, old, current_prefix); /* already gone is fine */
    rc = nl_address(sock, 1, index, addr, prefix);
    t_addr = mono() - t0;
    if (rc >= 0) rc = nl_default_route(sock, index, gwaddr);
    t_route = mono() - t0;
    if (rc < 0) {
        snprintf(err, errcap, "netlink: %s", strerror(-rc));
        close(sock);
        return -1;
    }
    close(sock);
    snprintf(current_ip, sizeof current_ip, "%s", ip);
    current_prefix = prefix;
    return 0;
}

static char *big_a, *big_b; /* scratch for hosts / keys (up to MAXLINE) */

/* Same file content already? Then no write (and no reload): a reboot re-applies the
 * identity kept on disk, which must not count as a change. */
static int same_content(const char *path, const char *data) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    size_t len = strlen(data);
    char *buf = malloc(len + 2);
    ssize_t n = buf ? read(fd, buf, len + 1) : -1;
    close(fd);
    int same = n == (ssize_t)len && memcmp(buf, data, len) == 0;
    free(buf);
    return same;
}

/* A freshly installed Debian server has no package lists (Debian's cloud images ship
 * them empty): remove what the image build left, so `apt-get install` without an
 * `apt-get update` fails here as it would there. Only when a clone starts, never when
 * a rebooting node re-applies its identity (its lists are its own by then). */
static void empty_apt_lists(void) {
    static const char *dirs[] = {"/var/lib/apt/lists", "/var/lib/apt/lists/partial",
                                 "/var/cache/apt"};
    char path[512];
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        DIR *d = opendir(dirs[i]);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_type != DT_REG || strcmp(e->d_name, "lock") == 0) continue;
            snprintf(path, sizeof path, "%s/%s", dirs[i], e->d_name);
            unlink(path);
        }
        closedir(d);
    }
}

/* sshd (run with -r: no re-exec per connection) holds the host keys it read at start:
 * SIGHUP makes it execute itself again and read them. It removes its pid file first and
 * writes it once it listens again, so a new pid file means the new keys are served. */
static int reload_sshd(double timeout) {
    struct stat before;
    char pidbuf[32] = "";
    int fd = open("/run/sshd.pid", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &before) < 0) {
        if (fd >= 0) close(fd);
        return 0; /* no sshd running yet (boot): it reads the new keys when it starts */
    }
    ssize_t n = read(fd, pidbuf, sizeof pidbuf - 1);
    close(fd);
    int pid = n > 0 ? atoi(pidbuf) : 0;
    if (pid <= 1 || kill(pid, SIGHUP) < 0) return -1;
    for (double t0 = mono(); mono() - t0 < timeout; usleep(5000)) {
        struct stat now;
        if (stat("/run/sshd.pid", &now) == 0 &&
            (now.st_ino != before.st_ino || now.st_mtim.tv_nsec != before.st_mtim.tv_nsec ||
             now.st_mtim.tv_sec != before.st_mtim.tv_sec))
            return 0;
    }
    return -1;
}

static int apply_identity(const char *req, char *err, size_t errcap, int at_boot) {
    const char *net = find_key(req, "net");
    if (!net || configure_network(net, err, errcap)) {
        if (!net) snprintf(err, errcap, "no net");
        return -1;
    }
    if (get_str(req, "hostname", big_a, MAXLINE) == 0) sethostname(big_a, strlen(big_a));
    /* The files a clone needs at once live in tmpfs (see agent.py for why). */
    mkdir(RUN_DIR, 0755);
    if (get_str(req, "hosts", big_a, MAXLINE) == 0) write_file(RUN_DIR "/hosts", big_a, 0644);
    const char *ssh = find_key(req, "ssh");
    if (ssh && *ssh == '{') {
        if (get_str(ssh, "public", big_a, MAXLINE) == 0) {
            strcat(big_a, "\n");
            write_file(RUN_DIR "/authorized_keys", big_a, 0600);
        }
        if (get_str(ssh, "private", big_b, MAXLINE) == 0)
            write_file(RUN_DIR "/id_ed25519", big_b, 0600);
    }
    /* Each node its own: machine-id (systemd, D-Bus, journald, kubeadm read it) and SSH
     * host key; the cluster's known_hosts names every node's key. */
    if (get_str(req, "machine_id", big_a, 64) == 0) {
        strcat(big_a, "\n");
        if (!same_content("/etc/machine-id", big_a)) write_file("/etc/machine-id", big_a, 0444);
    }
    if (get_str(req, "known_hosts", big_a, MAXLINE) == 0)
        write_file(RUN_DIR "/known_hosts", big_a, 0644);
    const char *hk = find_key(req, "host_key");
    int new_key = 0;
    if (hk && *hk == '{' && get_str(hk, "private", big_b, MAXLINE) == 0 &&
        !same_content("/etc/ssh/ssh_host_ed25519_key", big_b)) {
        write_file("/etc/ssh/ssh_host_ed25519_key", big_b, 0600);
        if (get_str(hk, "public", big_a, MAXLINE) == 0) {
            strcat(big_a, "\n");
            write_file("/etc/ssh/ssh_host_ed25519_key.pub", big_a, 0644);
        }
        new_key = 1;
    }
    if (!at_boot && get_bool(req, "fresh_apt", 0)) empty_apt_lists();
    if (new_key && !at_boot && reload_sshd(10.0) < 0) {
        snprintf(err, errcap, "sshd did not reload its new host key");
        return -1;
    }
    return 0;
}

static void reseed(const char *b64) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    struct { struct rand_pool_info info; unsigned char buf[512]; } pool;
    unsigned acc = 0, bits = 0, n = 0;
    for (const char *p = b64; *p && n < sizeof pool.buf; p++) {
        const char *at = strchr(tbl, *p);
        if (!at || !*p) continue;
        acc = (acc << 6) | (unsigned)(at - tbl);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            pool.buf[n++] = (acc >> bits) & 0xff;
        }
    }
    int fd = open("/dev/random", O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    pool.info.entropy_count = n * 8;
    pool.info.buf_size = n;
    ioctl(fd, RNDADDENTROPY, &pool);
    ioctl(fd, RNDRESEEDCRNG);
    close(fd);
}

static char *pending_persist; /* the identity request, kept on disk once idle */

static void persist_identity(void) {
    char host[256];
    mkdir("/var/lib/antrieb", 0700);
    write_file(STATE_FILE, pending_persist, 0600);
    if (get_str(pending_persist, "hostname", host, sizeof host - 1) == 0) {
        strcat(host, "\n");
        write_file("/etc/hostname", host, 0644);
    }
    free(pending_persist);
    pending_persist = NULL;
}

static void op_identity(const char *req, long id) {
    char err[256] = "", sample[33], entropy[1024];
    unsigned char rnd[16];
    double t0 = mono(), t_files, t_entropy;
    if (apply_identity(req, err, sizeof err, 0)) {
        put("{\"id\":%ld,\"ok\":false,\"error\":", id);
        put_escaped(err);
        put("}");
        return;
    }
    t_files = mono() - t0;
    if (get_str(req, "entropy", entropy, sizeof entropy) == 0) reseed(entropy);
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, rnd, sizeof rnd) != sizeof rnd) memset(rnd, 0, sizeof rnd);
    if (fd >= 0) close(fd);
    for (int i = 0; i < 16; i++) sprintf(sample + 2 * i, "%02x", rnd[i]);
    t_entropy = mono() - t0;
    /* The wall clock last, but before the reply (see agent.py). */
    double now = get_num(req, "time", 0) + (mono() - t0);
    if (now > 0) {
        struct timespec ts = {(time_t)now, (long)((now - (time_t)now) * 1e9)};
        clock_settime(CLOCK_REALTIME, &ts);
    }
    if (get_bool(req, "persist", 1)) {
        free(pending_persist);
        pending_persist = strdup(req);
    }
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    double t_end = mono() - t0;
    put("{\"id\":%ld,\"ok\":true,\"seconds\":%.4f,\"random\":\"%s\",\"time\":%.3f,"
        "\"steps\":{\"mac\":%.4f,\"addr\":%.4f,\"route\":%.4f,\"files\":%.4f,"
        "\"entropy\":%.4f,\"clock\":%.4f},\"agent\":\"c\"}",
        id, t_end, sample, wall.tv_sec + wall.tv_nsec / 1e9, t_mac, t_addr, t_route, t_files,
        t_entropy, t_end);
}

/* Everything else goes to the Python agent, one process per request. */
static void op_delegate(const char *line, long id) {
    int in[2], outp[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(outp, O_CLOEXEC)) goto fail;
    pid_t pid = fork();
    if (pid < 0) goto fail;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(outp[1], 1);
        const char *agent_py = getenv("ANTRIEB_AGENT_PY"); /* tests point elsewhere */
        execl("/usr/bin/python3", "python3", agent_py ? agent_py : PY_AGENT, "--one",
              (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(outp[1]);
    size_t len = strlen(line);
    for (size_t done = 0; done < len;) {
        ssize_t n = write(in[1], line + done, len - done);
        if (n <= 0) break;
        done += n;
    }
    close(in[1]);
    char buf[65536];
    size_t start = out_len;
    ssize_t n;
    while ((n = read(outp[0], buf, sizeof buf - 1)) > 0) {
        buf[n] = 0;
        put("%s", buf);
    }
    close(outp[0]);
    waitpid(pid, NULL, 0);
    while (out_len > start && (out[out_len - 1] == '\n')) out_len--;
    if (out_len > start) return;
fail:
    put("{\"id\":%ld,\"ok\":false,\"error\":\"agent.py did not answer\"}", id);
}

static void handle(const char *line) {
    char op[64] = "";
    long id = (long)get_num(line, "id", -1);
    if (get_str(line, "op", op, sizeof op)) {
        put("{\"id\":null,\"ok\":false,\"error\":\"bad request\"}");
    } else if (strcmp(op, "ping") == 0) {
        /* A ping comes before a reboot (the host reads the boot id): the identity must be
         * on disk by then, or the node comes back without its name and address. */
        if (pending_persist) persist_identity();
        /* the boot id tells a rebooted guest from the one that was asked to reboot */
        char boot[40] = "";
        int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t n = read(fd, boot, sizeof boot - 1);
            close(fd);
            boot[n > 0 ? n : 0] = 0;
            for (char *c = boot; *c; c++) if (*c == '\n') *c = 0;
        }
        put("{\"id\":%ld,\"ok\":true,\"agent\":\"c\",\"boot_id\":\"%s\"}", id, boot);
    } else if (strcmp(op, "identity") == 0) {
        op_identity(line, id);
    } else {
        op_delegate(line, id);
    }
    put("\n");
}

static int find_port(char *path, size_t cap) {
    for (;;) {
        DIR *d = opendir("/sys/class/virtio-ports");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            char name_file[512], name[64] = "";
            snprintf(name_file, sizeof name_file, "/sys/class/virtio-ports/%s/name", e->d_name);
            int fd = open(name_file, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            ssize_t n = read(fd, name, sizeof name - 1);
            close(fd);
            if (n > 0 && strncmp(name, "agent", 5) == 0 && (name[5] == '\n' || !name[5])) {
                snprintf(path, cap, "/dev/%s", e->d_name);
                closedir(d);
                if (access(path, F_OK) == 0) return 0;
                d = NULL;
                break;
            }
        }
        if (d) closedir(d);
        usleep(50000);
    }
}

static void restore_identity_at_boot(void) {
    char err[256];
    mkdir(RUN_DIR, 0755);
    int fd = open(STATE_FILE, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, big_b, MAXLINE - 1);
        close(fd);
        if (n > 0) {
            big_b[n] = 0;
            char *copy = strdup(big_b);
            apply_identity(copy, err, sizeof err, 1);
            free(copy);
            return;
        }
    }
    if (access(RUN_DIR "/hosts", F_OK) != 0) write_file(RUN_DIR "/hosts", "127.0.0.1 localhost\n", 0644);
}

int main(int argc, char **argv) {
    static char port[512];
    char *buf = malloc(MAXLINE + 65536);
    size_t used = 0;
    big_a = malloc(MAXLINE);
    big_b = malloc(MAXLINE);
    out_cap = 65536;
    out = malloc(out_cap);
    int fd;
    if (argc == 3 && strcmp(argv[1], "--fd") == 0) { /* tests: an inherited socket */
        fd = atoi(argv[2]);
        fcntl(fd, F_SETFL, O_NONBLOCK);
    } else {
        restore_identity_at_boot();
        find_port(port, sizeof port);
        fd = open(port, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) return 1;
    }
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        int ready = poll(&p, 1, pending_persist ? 2000 : 1000);
        if (ready == 0) {
            if (pending_persist) persist_identity();
            continue;
        }
        ssize_t n = read(fd, buf + used, MAXLINE + 65536 - used - 1);
        if (n <= 0) { /* host not connected (HUP) or nothing yet */
            if (pending_persist) persist_identity();
            usleep(20000);
            continue;
        }
        used += n;
        buf[used] = 0;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', buf + used - start))) {
            *nl = 0;
            if (nl > start) {
                out_len = 0;
                handle(start);
                for (size_t done = 0; done < out_len;) {
                    ssize_t w = write(fd, out + done, out_len - done);
                    if (w > 0) done += w;
                    else if (errno == EAGAIN) poll(&(struct pollfd){fd, POLLOUT, 0}, 1, 1000);
                    else break;
                }
            }
            start = nl + 1;
        }
        used = buf + used - start;
        memmove(buf, start, used);
        if (used >= MAXLINE) used = 0; /* a line too long to be ours: drop it */
    }
}
