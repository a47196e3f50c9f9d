/* The sandbox's C engine: the fork server's per-run loop, written so that the server never touches a
 * Python object between runs.
 *
 * Why C: every child is a fork of a warm interpreter, and CPython writes a reference count on every
 * object it touches, so each page the server's own Python code touches after a fork is copied (by the
 * server or by the child). The Python engine (_server.py) spends more CPU per run than the program it
 * runs; here the server's work is a handful of system calls.
 *
 * _zygote.py loads this module into a fresh interpreter that is already pid 1 of the server's
 * namespaces, inside its minimal root (see _server.py), and calls
 *
 *     serve(sock_fd, uid, gid, workdir, workroot[, rootless, nproc_extra, malloc_arenas])
 *
 * which answers requests (the format of _wire.py) until the harness closes the socket, and returns None
 * then. A child forked for the next run comes back from serve() too: with (code, payload), once it is in
 * its own session, limited, dropped to the run's uid and in its working directory; _zygote.py then runs
 * the program in Python (_runner.run_program) and leaves with os._exit.
 *
 * The steps are those of _server.py's Server.execute/_watch/_child; keep the two in step.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_MAGIC 0x4C465251u
#define RESPONSE_MAGIC 0x4C465253u
#define STDOUT_TRUNCATED 1u
#define STDERR_TRUNCATED 2u
#define EXITED 4u
#define SIGNALED 8u
#define SETUP_OK 16u
#define KILLED_WALL 1u
#define KILLED_OUTPUT 2u
#define KILLED_IDLE 3u /* wall time less the time spent waiting for a CPU passed idle_ms */
#define SETUP_FD 3
#define REQUEST_FD 4
#define CHUNK 65536
#define DRAIN_S 2.0   /* after the program's exit, how long its pipes may still be drained */
#define REAP_S 5.0

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

typedef struct __attribute__((packed)) {
    uint32_t magic, idle_ms;
    double cpu_s, wall_s;
    uint64_t memory_bytes, fsize_bytes, stdout_cap, stderr_cap;
    uint32_t nofile, nproc;
    uint64_t code_len, stdin_len, payload_len;
} request_t;

typedef struct __attribute__((packed)) {
    uint32_t magic;
    int32_t exit_code, signal;
    uint32_t killed_for;
    double wall_ms, cpu_ms;
    int64_t maxrss_kb;
    uint32_t flags, setup_len, error_len, reserved;
    uint64_t stdout_len, stderr_len;
} response_t;

_Static_assert(sizeof(request_t) == 88, "request_t must match _wire.REQUEST");
_Static_assert(sizeof(response_t) == 72, "response_t must match _wire.RESPONSE");

typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

typedef struct {
    pid_t pid;
    int w0, r1, r2, rs, wq; /* server's ends: stdin, stdout, stderr, setup report, request */
} child_t;

typedef struct {
    int sock;
    uid_t uid;
    gid_t gid;
    int rootless;      /* root of a user namespace: no uid to drop to; the child drops its capabilities */
    int nproc_extra;   /* processes of that namespace besides the run, which RLIMIT_NPROC counts too */
    const char *workdir, *workroot;
    char program[4096];
} config_t;

/* ------------------------------------------------------------------ small helpers */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int reserve(buf_t *b, size_t n) {
    if (n <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < n) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Nothing of a run may stay readable in the memory the next child is forked from. */
static void wipe(buf_t *b) {
    if (b->len) explicit_bzero(b->p, b->len);
    b->len = 0;
}

static int read_exact(int fd, void *dst, size_t n) { /* 1 done, 0 EOF at start, -1 error/short */
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (char *)dst + got, n - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return got == 0 && k == 0 ? 0 : -1;
        got += (size_t)k;
    }
    return 1;
}

static int write_all(int fd, const struct iovec *iov_in, int n) {
    struct iovec iov[8];
    memcpy(iov, iov_in, sizeof(struct iovec) * n);
    int i = 0;
    while (i < n) {
        if (iov[i].iov_len == 0) { i++; continue; }
        ssize_t k = writev(fd, iov + i, n - i);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return -1;
        while (i < n && (size_t)k >= iov[i].iov_len) { k -= iov[i].iov_len; i++; }
        if (i < n) { iov[i].iov_base = (char *)iov[i].iov_base + k; iov[i].iov_len -= k; }
    }
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st; (void)ftw;
    if (type == FTW_DP) rmdir(path); else unlink(path);
    return 0;
}

static void rmtree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT); }

/* pid 1 never receives its own kill(-1); each call reaches every other process of the namespace. */
static void kill_all(void) {
    for (int i = 0; i < 1000; i++)
        if (kill(-1, SIGKILL) < 0 && errno == ESRCH) return;
}

/* Reap every child (orphans of the run come to pid 1) until none is left. */
static void reap(void) {
    double end = now_s() + REAP_S;
    for (;;) {
        pid_t p = waitpid(-1, NULL, WNOHANG);
        if (p < 0 && errno == EINTR) continue;
        if (p < 0) return;
        if (p == 0) {
            if (now_s() > end) return;
            kill_all();
            usleep(1000);
        }
    }
}

/* Nothing a run wrote to /tmp, /var/tmp or /dev/shm may reach the next run: remove what its uid owns.
 * getdents64 into a stack buffer, not opendir: opendir's heap buffer costs copy-on-write faults.
 * Rootless, the run's uid owns these directories and the work root too (there is only one uid): it may
 * have changed their modes or left files in the work root, so both are put back as well. */
static void clean_shared_tmp(const config_t *cfg) {
    /* the work root is empty between runs: everything in it is the run's */
    const char *dirs[] = {"/tmp", "/var/tmp", "/dev/shm", cfg->rootless ? cfg->workroot : NULL};
    char path[4096], ents[2048];
    for (size_t d = 0; d < sizeof dirs / sizeof *dirs && dirs[d]; d++) {
        if (cfg->rootless) chmod(dirs[d], d < 3 ? 01777 : 0711);
        int dfd = open(dirs[d], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) continue;
        long n;
        while ((n = syscall(SYS_getdents64, dfd, ents, sizeof ents)) > 0) {
            for (long off = 0; off < n;) {
                struct dirent64 *e = (struct dirent64 *)(ents + off);
                off += e->d_reclen;
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
                snprintf(path, sizeof path, "%s/%s", dirs[d], e->d_name);
                struct stat st;
                if (!strcmp(path, cfg->workroot) || fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0
                    || st.st_uid != cfg->uid)
                    continue;
                if (S_ISDIR(st.st_mode)) rmtree(path); else unlinkat(dfd, e->d_name, 0);
            }
        }
        close(dfd);
    }
}

/* ------------------------------------------------------------------ the child */

/* seccomp: a deny-list of system calls a Python program has no business making, most of them kernel
 * attack surface that the uid drop alone leaves open (an unprivileged uid may still create user
 * namespaces here, and from there mount, network and more), the rest needing privileges the run
 * doesn't have anyway. They fail with EPERM; clone3 fails with ENOSYS so that glibc falls back to
 * clone, whose flags can be checked (no new namespace); a foreign ABI kills the process.
 * Installed once on the zygote (which needs none of them after its setup), inherited by every child:
 * a filter installed per child is compiled per child. */
#if defined(__x86_64__)
#define SECCOMP_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SECCOMP_ARCH AUDIT_ARCH_AARCH64
#endif
#define NEW_NAMESPACE_FLAGS (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC \
                             | CLONE_NEWUTS | CLONE_NEWCGROUP | 0x00000080 /* CLONE_NEWTIME */)

static const long DENIED[] = {
#define DENY(name) __NR_##name,
#ifdef __NR_ptrace
    DENY(ptrace)
#endif
#ifdef __NR_process_vm_readv
    DENY(process_vm_readv) DENY(process_vm_writev)
#endif
#ifdef __NR_pidfd_getfd
    DENY(pidfd_getfd)
#endif
#ifdef __NR_kcmp
    DENY(kcmp)
#endif
    DENY(unshare) DENY(setns) DENY(mount) DENY(umount2) DENY(pivot_root) DENY(chroot)
#ifdef __NR_fsopen
    DENY(fsopen) DENY(fsconfig) DENY(fsmount) DENY(fspick) DENY(move_mount) DENY(open_tree)
#endif
#ifdef __NR_mount_setattr
    DENY(mount_setattr)
#endif
#ifdef __NR_bpf
    DENY(bpf)
#endif
#ifdef __NR_perf_event_open
    DENY(perf_event_open)
#endif
#ifdef __NR_userfaultfd
    DENY(userfaultfd)
#endif
#ifdef __NR_io_uring_setup
    DENY(io_uring_setup) DENY(io_uring_enter) DENY(io_uring_register)
#endif
    DENY(keyctl) DENY(add_key) DENY(request_key)
    DENY(init_module) DENY(finit_module) DENY(delete_module) DENY(kexec_load)
#ifdef __NR_kexec_file_load
    DENY(kexec_file_load)
#endif
    DENY(reboot) DENY(swapon) DENY(swapoff) DENY(acct) DENY(quotactl) DENY(syslog) DENY(vhangup)
    DENY(open_by_handle_at) DENY(name_to_handle_at) DENY(fanotify_init) DENY(personality)
#ifdef __NR_iopl
    DENY(iopl) DENY(ioperm)
#endif
#ifdef __NR_lookup_dcookie
    DENY(lookup_dcookie)
#endif
#undef DENY
};

static int install_seccomp(void) {
#ifndef SECCOMP_ARCH
    errno = ENOSYS;
    return -1;
#else
    struct sock_filter f[8 + 2 * sizeof DENIED / sizeof *DENIED + 8];
    int n = 0;
#define STMT(code, k) f[n++] = (struct sock_filter)BPF_STMT(code, k)
#define JUMP(code, k, jt, jf) f[n++] = (struct sock_filter)BPF_JUMP(code, k, jt, jf)
    STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, SECCOMP_ARCH, 1, 0);
    STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#ifdef __x86_64__
    JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1); /* the x32 ABI */
    STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
#endif
    for (size_t i = 0; i < sizeof DENIED / sizeof *DENIED; i++) {
        JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)DENIED[i], 0, 1);
        STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    }
#ifdef __NR_clone3
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1);
    STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS);
#endif
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 3);
    STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])); /* flags, low word */
    JUMP(BPF_JMP | BPF_JSET | BPF_K, NEW_NAMESPACE_FLAGS, 0, 1);
    STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
#undef STMT
#undef JUMP
    struct sock_fprog prog = {(unsigned short)n, f};
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
#endif
}

static void setup_failed(const char *what) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "OSError: %s: %s", what, strerror(errno));
    if (write(SETUP_FD, msg, n > 0 ? (size_t)n : 0)) {}
    _exit(125);
}

static int setlimit(int resource, rlim_t soft, rlim_t hard) {
    struct rlimit r = {soft, hard};
    return setrlimit(resource, &r);
}

/* A run as root of its user namespace gives up every capability for good (_isolation.drop_capabilities):
 * securebits first, so that an exec as uid 0 gives none back, then the bounding and ambient sets, then
 * the capability sets themselves. */
static int drop_caps(void) {
    if (prctl(PR_SET_SECUREBITS, 1 | 2 | 4 | 8 | 32, 0, 0, 0) != 0) return -1; /* NOROOT, NO_SETUID_FIXUP, locked */
    for (unsigned long cap = 0; prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0; cap++) {}
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    struct { uint32_t version; int pid; } header = {0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0};
    uint32_t data[6] = {0};
    return (int)syscall(SYS_capset, &header, data);
}

/* Set up what doesn't depend on the request, wait for it, then limit, drop and hand the program to
 * Python. Returns (code, payload), or NULL with an exception set (then the caller exits). */
static PyObject *child_main(const config_t *cfg, int fds[5]) {
    int moved[5];
    PyOS_AfterFork_Child();
    /* Sources first moved above the targets 0-4, so that no dup2 overwrites a source still to move. */
    for (int i = 0; i < 5; i++)
        if ((moved[i] = fcntl(fds[i], F_DUPFD, REQUEST_FD + 1)) < 0) _exit(125);
    for (int t = 0; t < 5; t++)
        if (dup3(moved[t], t, t <= 2 ? 0 : O_CLOEXEC) < 0) _exit(125);
    if (syscall(SYS_close_range, REQUEST_FD + 1, ~0U, 0) != 0)
        for (int fd = REQUEST_FD + 1; fd < 65536; fd++) close(fd);
    if (setsid() < 0) setup_failed("setsid");
    umask(077);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) setup_failed("no_new_privs");

    buf_t req = {0};
    for (;;) {
        if (reserve(&req, req.len + CHUNK) != 0) setup_failed("request buffer");
        ssize_t k = read(REQUEST_FD, req.p + req.len, CHUNK);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) setup_failed("read request");
        if (k == 0) break;
        req.len += (size_t)k;
    }
    close(REQUEST_FD);
    if (req.len == 0) _exit(0); /* the server is going away without a run for us */
    request_t lim;
    if (req.len < sizeof lim) { errno = EPROTO; setup_failed("short request"); }
    memcpy(&lim, req.p, sizeof lim);
    if (req.len != sizeof lim + lim.code_len + lim.payload_len) { errno = EPROTO; setup_failed("request size"); }

    if (chdir(cfg->workdir) != 0) setup_failed("chdir");
    double c = lim.cpu_s < 1 ? 1 : lim.cpu_s;
    rlim_t cpu = (rlim_t)c + ((double)(rlim_t)c < c);
    if (setlimit(RLIMIT_CPU, cpu, cpu + 1) || setlimit(RLIMIT_AS, lim.memory_bytes, lim.memory_bytes)
        || setlimit(RLIMIT_FSIZE, lim.fsize_bytes, lim.fsize_bytes) || setlimit(RLIMIT_NOFILE, lim.nofile, lim.nofile)
        || setlimit(RLIMIT_CORE, 0, 0) || setlimit(RLIMIT_NPROC, lim.nproc + cfg->nproc_extra, lim.nproc + cfg->nproc_extra))
        setup_failed("setrlimit");
    if (cfg->rootless) {
        if (drop_caps() != 0) setup_failed("drop capabilities");
    } else if (setgroups(0, NULL) || setresgid(cfg->gid, cfg->gid, cfg->gid) || setresuid(cfg->uid, cfg->uid, cfg->uid))
        setup_failed("drop to the run's uid");
    if (write(SETUP_FD, "ok", 2) != 2) _exit(125);
    close(SETUP_FD);
    const char *code = req.p + sizeof lim;
    PyObject *got = Py_BuildValue("(y#y#)", code, (Py_ssize_t)lim.code_len, code + lim.code_len,
                                  (Py_ssize_t)lim.payload_len);
    if (!got) { /* under a small memory limit: say so the way Python would */
        if (write(2, "MemoryError\n", 12)) {}
        _exit(1);
    }
    return got;
}

/* Fork the next run's child; 0 in the child (fds then holds its ends), the pid in the server. */
static pid_t spawn(child_t *c, int fds[5]) {
    int p[5][2];
    for (int i = 0; i < 5; i++)
        if (pipe2(p[i], O_CLOEXEC) != 0) {
            for (int j = 0; j < i; j++) { close(p[j][0]); close(p[j][1]); }
            return -1;
        }
    PyOS_BeforeFork();
    pid_t pid = fork();
    if (pid == 0) {
        /* child's ends: stdin read, stdout write, stderr write, setup write, request read */
        fds[0] = p[0][0]; fds[1] = p[1][1]; fds[2] = p[2][1]; fds[3] = p[3][1]; fds[4] = p[4][0];
        return 0;
    }
    PyOS_AfterFork_Parent();
    close(p[0][0]); close(p[1][1]); close(p[2][1]); close(p[3][1]); close(p[4][0]);
    if (pid < 0) {
        close(p[0][1]); close(p[1][0]); close(p[2][0]); close(p[3][0]); close(p[4][1]);
        return -1;
    }
    *c = (child_t){pid, p[0][1], p[1][0], p[2][0], p[3][0], p[4][1]};
    return pid;
}

static void discard(child_t *c) { /* a spawned child that gets no request (root, has run nothing) */
    if (c->pid <= 0) return;
    close(c->w0); close(c->r1); close(c->r2); close(c->rs); close(c->wq);
    kill(c->pid, SIGKILL);
    while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR) {}
    c->pid = -1;
}

/* ------------------------------------------------------------------ one run, server side */

/* Seconds the run's main process's threads spent runnable but waiting for a CPU (the most of any thread),
 * from /proc/PID/task/{*}/schedstat (its second field, ns); 0 where it can't be read. Read only when a
 * deadline comes, never per run. Same as _server.py's _run_delay_s. */
static double run_delay_s(pid_t pid) {
    char path[300], line[128], ents[2048];
    unsigned long long most = 0;
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return 0;
    long n;
    while ((n = syscall(SYS_getdents64, dfd, ents, sizeof ents)) > 0) {
        for (long off = 0; off < n;) {
            struct dirent64 *e = (struct dirent64 *)(ents + off);
            off += e->d_reclen;
            if (e->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "%s/schedstat", e->d_name);
            int fd = openat(dfd, path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            ssize_t k = read(fd, line, sizeof line - 1);
            close(fd);
            unsigned long long on_cpu, waited;
            if (k > 0) {
                line[k] = 0;
                if (sscanf(line, "%llu %llu", &on_cpu, &waited) == 2 && waited > most) most = waited;
            }
        }
    }
    close(dfd);
    return most / 1e9;
}

typedef struct {
    request_t req;
    buf_t code, in, payload, out, err;
    char setup[4096];
    size_t setup_len;
    char error[512];
    response_t resp;
} run_t;

static int make_workdir(const config_t *cfg, run_t *r) {
    if (mkdir(cfg->workdir, 0700) != 0) {
        if (errno != EEXIST) return -1;
        rmtree(cfg->workdir); /* a previous removal failed half-way: never reuse what a run left */
        if (mkdir(cfg->workdir, 0700) != 0) return -1;
    }
    int fd = open(cfg->program, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    struct iovec iov = {r->code.p, r->code.len};
    int rc = write_all(fd, &iov, 1);
    close(fd);
    if (rc != 0 || chown(cfg->workdir, cfg->uid, cfg->gid) != 0) return -1;
    return 0;
}

static void remove_workdir(const config_t *cfg) {
    if (unlink(cfg->program) == 0 && rmdir(cfg->workdir) == 0) return; /* usual case: two system calls */
    rmtree(cfg->workdir);
}

static char chunk[CHUNK]; /* the last read of a run's output: wiped with the run's buffers */
static size_t chunk_used;

/* Read one chunk of a program's output into its buffer, up to the cap. 1: more may come; 0: done;
 * -1: cap exceeded (the pipe is closed then). */
static int drain(int fd, buf_t *b, uint64_t cap) {
    ssize_t k = read(fd, chunk, CHUNK);
    if (k < 0) return (errno == EINTR || errno == EAGAIN) ? 1 : 0;
    if (k == 0) return 0;
    if ((size_t)k > chunk_used) chunk_used = (size_t)k;
    size_t room = cap > b->len ? cap - b->len : 0;
    size_t take = (size_t)k < room ? (size_t)k : room;
    if (take && reserve(b, b->len + take) == 0) {
        memcpy(b->p + b->len, chunk, take);
        b->len += take;
    }
    return (size_t)k > room ? -1 : 1;
}

static void watch(child_t *c, run_t *r) {
    const request_t *q = &r->req;
    response_t *resp = &r->resp;
    struct iovec hand[3] = {{&r->req, sizeof r->req}, {r->code.p, r->code.len}, {r->payload.p, r->payload.len}};
    request_t to_child = r->req;
    to_child.stdin_len = 0;
    hand[0].iov_base = &to_child;
    /* blocking: the child is already reading, a large program just takes several pipe-fulls */
    write_all(c->wq, hand, 3); /* a child already gone reports through its status and setup pipe */
    close(c->wq);

    size_t sent = 0;
    int w0 = c->w0;
    fcntl(w0, F_SETFL, O_NONBLOCK);
    if (r->in.len) {
        ssize_t k = write(w0, r->in.p, r->in.len < CHUNK ? r->in.len : CHUNK);
        if (k > 0) sent = (size_t)k;
        else if (k < 0 && errno != EAGAIN) sent = r->in.len;
    }
    if (sent >= r->in.len) { close(w0); w0 = -1; }

    double t0 = now_s(), ceiling = t0 + q->wall_s, idle_s = q->idle_ms / 1000.0, t1 = t0;
    double deadline = idle_s > 0 && t0 + idle_s < ceiling ? t0 + idle_s : ceiling, end = deadline;
    int pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
    int out = c->r1, err = c->r2, exited = 0, status = 0;
    struct rusage ru = {0};
    uint32_t killed = 0;
    while (out >= 0 || err >= 0 || pidfd >= 0 || w0 >= 0) {
        double now = now_s();
        if (!exited && !killed && now >= deadline) {
            /* Idle time is the wall time less the time the run waited for a CPU: a sleeper stops at
             * idle_s, a program slowed by the machine's load gets its CPU time (its own limit). */
            int by_idle = idle_s > 0 && now < ceiling;
            double idle = by_idle ? now - t0 - run_delay_s(c->pid) : 0;
            if (by_idle && idle < idle_s) {
                deadline = end = now + idle_s - idle < ceiling ? now + idle_s - idle : ceiling;
            } else {
                killed = by_idle ? KILLED_IDLE : KILLED_WALL;
                kill_all();
            }
        }
        if (exited && now >= end) break;
        double wait = killed && !exited ? 0.05 : (end - now > 0 ? end - now : 0);
        struct pollfd pf[4];
        int n = 0;
        if (pidfd >= 0) pf[n++] = (struct pollfd){pidfd, POLLIN, 0};
        if (out >= 0) pf[n++] = (struct pollfd){out, POLLIN, 0};
        if (err >= 0) pf[n++] = (struct pollfd){err, POLLIN, 0};
        if (w0 >= 0) pf[n++] = (struct pollfd){w0, POLLOUT, 0};
        int ready = poll(pf, n, (int)(wait * 1000) + (wait > 0));
        if (ready < 0 && errno != EINTR) break;
        for (int i = 0; i < n && ready > 0; i++) {
            if (!pf[i].revents) continue;
            int fd = pf[i].fd;
            if (fd == pidfd) {
                close(pidfd);
                pidfd = -1;
                while (wait4(c->pid, &status, 0, &ru) < 0 && errno == EINTR) {}
                exited = 1;
                t1 = now_s();
                kill_all(); /* the run ends with its main process: nothing it started may outlive it */
                if (w0 >= 0) { close(w0); w0 = -1; }
                end = now_s() + DRAIN_S;
            } else if (fd == w0) {
                ssize_t k = write(w0, r->in.p + sent, r->in.len - sent < CHUNK ? r->in.len - sent : CHUNK);
                if (k < 0 && errno == EAGAIN) continue;
                sent = k < 0 ? r->in.len : sent + (size_t)k; /* an error: the program closed its stdin, fine */
                if (sent >= r->in.len) { close(w0); w0 = -1; }
            } else if (fd == out || fd == err) {
                int is_out = fd == out;
                int got = drain(fd, is_out ? &r->out : &r->err, is_out ? q->stdout_cap : q->stderr_cap);
                if (got == 1) continue;
                close(fd);
                if (is_out) out = -1; else err = -1;
                if (got < 0) {
                    resp->flags |= is_out ? STDOUT_TRUNCATED : STDERR_TRUNCATED;
                    if (!killed && !exited) { killed = KILLED_OUTPUT; kill_all(); }
                }
            }
        }
    }
    if (pidfd >= 0) close(pidfd);
    if (out >= 0) close(out);
    if (err >= 0) close(err);
    if (w0 >= 0) close(w0);
    if (!exited) { /* only if draining gave up, or pidfd_open failed */
        while (wait4(c->pid, &status, 0, &ru) < 0 && errno == EINTR) {}
        t1 = now_s();
    }
    reap();
    ssize_t k = read(c->rs, r->setup, sizeof r->setup);
    close(c->rs);
    r->setup_len = k > 0 ? (size_t)k : 0;
    if (r->setup_len == 2 && !memcmp(r->setup, "ok", 2)) { resp->flags |= SETUP_OK; r->setup_len = 0; }
    if (WIFEXITED(status)) { resp->flags |= EXITED; resp->exit_code = WEXITSTATUS(status); }
    if (WIFSIGNALED(status)) { resp->flags |= SIGNALED; resp->signal = WTERMSIG(status); }
    resp->killed_for = killed;
    resp->wall_ms = (t1 - t0) * 1000.0;
    resp->cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000.0 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000.0;
    resp->maxrss_kb = ru.ru_maxrss;
    c->pid = -1;
}

static int read_blob(int sock, buf_t *b, uint64_t n) {
    if (reserve(b, n ? n : 1) != 0) return -1;
    b->len = n;
    return n ? read_exact(sock, b->p, n) == 1 ? 0 : -1 : 0;
}

static int send_response(const config_t *cfg, run_t *r, size_t error_len) {
    response_t *resp = &r->resp;
    resp->magic = RESPONSE_MAGIC;
    resp->error_len = (uint32_t)error_len;
    resp->setup_len = error_len ? 0 : (uint32_t)r->setup_len;
    resp->stdout_len = error_len ? 0 : r->out.len;
    resp->stderr_len = error_len ? 0 : r->err.len;
    struct iovec iov[5] = {{resp, sizeof *resp}, {r->setup, resp->setup_len}, {r->error, error_len},
                           {r->out.p, resp->stdout_len}, {r->err.p, resp->stderr_len}};
    return write_all(cfg->sock, iov, 5);
}

/* ------------------------------------------------------------------ the loop */

static PyObject *serve(PyObject *self, PyObject *args) {
    (void)self;
    config_t cfg = {0};
    unsigned int uid, gid;
    int arenas = 0;
    if (!PyArg_ParseTuple(args, "iIIss|iii", &cfg.sock, &uid, &gid, &cfg.workdir, &cfg.workroot, &cfg.rootless,
                          &cfg.nproc_extra, &arenas))
        return NULL;
    cfg.uid = uid;
    cfg.gid = gid;
    /* RLIMIT_AS counts reserved address space: one malloc arena, not one 64 MiB heap per thread (see
     * _isolation.fit_threads; inherited by every child). */
    if (arenas > 0) mallopt(M_ARENA_MAX, arenas);
    snprintf(cfg.program, sizeof cfg.program, "%s/solution.py", cfg.workdir);
    static run_t r;
    child_t next = {.pid = -1};
    int spawn_errno = 0;
    for (;;) {
        if (next.pid < 0) { /* fork the next run's child now, while the harness reads the last result */
            int fds[5];
            pid_t pid = spawn(&next, fds);
            if (pid == 0) return child_main(&cfg, fds);
            spawn_errno = errno;
        }
        int got = read_exact(cfg.sock, &r.req, sizeof r.req);
        if (got != 1 || r.req.magic != REQUEST_MAGIC) break; /* the harness is gone (or speaks nonsense) */
        if (read_blob(cfg.sock, &r.code, r.req.code_len) || read_blob(cfg.sock, &r.in, r.req.stdin_len)
            || read_blob(cfg.sock, &r.payload, r.req.payload_len))
            break;
        memset(&r.resp, 0, sizeof r.resp);
        r.out.len = r.err.len = r.setup_len = 0;
        size_t error_len = 0;
        if (next.pid < 0) {
            error_len = (size_t)snprintf(r.error, sizeof r.error, "OSError: fork: %s", strerror(spawn_errno));
        } else if (make_workdir(&cfg, &r) != 0) {
            error_len = (size_t)snprintf(r.error, sizeof r.error, "OSError: working directory: %s", strerror(errno));
            discard(&next);
        } else {
            watch(&next, &r);
        }
        remove_workdir(&cfg);
        clean_shared_tmp(&cfg);
        int sent = send_response(&cfg, &r, error_len);
        wipe(&r.code); wipe(&r.in); wipe(&r.payload); wipe(&r.out); wipe(&r.err);
        explicit_bzero(r.setup, sizeof r.setup);
        explicit_bzero(chunk, chunk_used);
        chunk_used = 0;
        if (sent != 0) break;
    }
    discard(&next);
    Py_RETURN_NONE;
}

static PyObject *seccomp(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    if (install_seccomp() != 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"seccomp", seccomp, METH_NOARGS, "install the deny-list filter on this process (so on every child it forks: "
                                      "compiling a filter per child cost ~0.09 ms of CPU)"},
    {"serve", serve, METH_VARARGS, "serve(sock_fd, uid, gid, workdir, workroot[, rootless, nproc_extra, arenas]): "
                                   "run programs until the harness leaves; "
                                   "returns None there, and (code, payload) in each run's child."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lorafleet_zygote", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__lorafleet_zygote(void) { return PyModule_Create(&module); }
