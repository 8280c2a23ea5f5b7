/*
 * podrun stage1 "idle": the small native loops a running pod leaves in memory.
 *
 * A pod's long-lived processes do little once its apps run: the pod init reaps,
 * forwards signals and records exits; the supervisor (stage1, keeping the PID of
 * `podrun run`) waits for the init and forwards signals to it. Python needs ~3.5 MB
 * for each of them, so once the Python stage1 has started everything it execs into
 * this program (same PIDs, same children). Built by podrun when it imports the
 * flavor; without a C compiler the Python loops stay resident (same behaviour).
 *
 *   idle init --apps-dir DIR --stop-timeout MS [--interactive] PID:NAME:STARTED...
 *       PID 1 of the pod. Reaps every process; for an app PID writes
 *       DIR/NAME/status.json (as podrun/stage1/status.py does); forwards SIGTERM,
 *       SIGINT (unless --interactive) and SIGHUP to the running apps; after a
 *       SIGTERM, SIGKILLs every process of the pod once MS ms have passed; exits 0
 *       when every app has exited.
 *   idle wait --init PID [--interactive] [--kill-after MS] -- FINISH...
 *       The supervisor. Forwards SIGTERM, SIGINT (unless --interactive) and SIGHUP
 *       to PID (with --kill-after, SIGKILLs it MS ms after the first SIGTERM: the fly
 *       flavor, whose PID is the app), reaps it, then execs FINISH... --wstatus=N
 *       (N: the raw wait status).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct app {
    pid_t pid;
    char *name;
    char *started;
    int done;
};

static double now_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The signals both loops take synchronously: SIGCHLD and the forwarded ones. They
 * are already blocked by the Python stage1 that exec'd us; blocking again is a no-op. */
static void block_watched(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGCHLD);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigprocmask(SIG_BLOCK, set, NULL);
}

/* Wait for one of the signals in set, until deadline (CLOCK_MONOTONIC seconds; 0 =
 * no deadline). Returns the signal, or -1 on timeout/interruption. */
static int wait_signal(const sigset_t *set, double deadline) {
    siginfo_t info;
    if (deadline <= 0)
        return sigwaitinfo(set, &info);
    double left = deadline - now_mono();
    if (left < 0)
        left = 0;
    struct timespec ts;
    ts.tv_sec = (time_t)left;
    ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
    return sigtimedwait(set, &info, &ts);
}

static void write_status(const char *dir, struct app *a, int wstatus) {
    char path[4096], tmp[4096], body[512];
    int code, sig;
    if (WIFSIGNALED(wstatus)) {
        sig = WTERMSIG(wstatus);
        code = 128 + sig;
        snprintf(body, sizeof body,
                 "{\"started\": %s, \"exit_code\": null, \"signal\": %d, \"finished\": %.6f, "
                 "\"oom_killed\": false}", a->started, sig, now_wall());
    } else {
        code = WEXITSTATUS(wstatus);
        snprintf(body, sizeof body,
                 "{\"started\": %s, \"exit_code\": %d, \"signal\": null, \"finished\": %.6f, "
                 "\"oom_killed\": false}", a->started, code, now_wall());
    }
    (void)code;
    snprintf(path, sizeof path, "%s/%s/status.json", dir, a->name);
    snprintf(tmp, sizeof tmp, "%s/%s/.status.idle.tmp", dir, a->name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    size_t len = strlen(body), off = 0;
    while (off < len) {
        ssize_t n = write(fd, body + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        off += (size_t)n;
    }
    fsync(fd);
    close(fd);
    rename(tmp, path);
}

static int usage(void) {
    fputs("usage: idle init --apps-dir DIR --stop-timeout MS [--interactive] PID:NAME:STARTED...\n"
          "       idle wait --init PID [--interactive] [--kill-after MS] -- FINISH...\n", stderr);
    return 254;
}

static int run_init(int argc, char **argv) {
    const char *dir = NULL;
    double stop_timeout = 10.0;
    int interactive = 0, i, napps = 0, running;
    struct app *apps = calloc((size_t)argc, sizeof *apps);
    if (!apps)
        return 254;
    for (i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--apps-dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--stop-timeout") && i + 1 < argc)
            stop_timeout = atof(argv[++i]) / 1000.0;
        else if (!strcmp(argv[i], "--interactive"))
            interactive = 1;
        else {
            char *c1 = strchr(argv[i], ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
            if (!c2)
                return usage();
            *c1 = *c2 = '\0';
            apps[napps].pid = (pid_t)atoi(argv[i]);
            apps[napps].name = c1 + 1;
            apps[napps].started = c2 + 1;
            napps++;
        }
    }
    if (!dir)
        return usage();
    sigset_t set;
    block_watched(&set);
    double deadline = 0;
    int stopping = 0;
    running = napps;
    /* Apps that ended while we were exec'ing are reaped by the first pass below. */
    for (;;) {
        int wstatus;
        pid_t pid;
        while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0) {
            for (i = 0; i < napps; i++) {
                if (apps[i].pid == pid && !apps[i].done) {
                    apps[i].done = 1;
                    running--;
                    write_status(dir, &apps[i], wstatus);
                }
            }
        }
        if (running <= 0)
            return 0;
        if (deadline > 0 && now_mono() >= deadline) {
            kill(-1, SIGKILL);
            deadline = 0;
            continue;
        }
        int sig = wait_signal(&set, deadline);
        if (sig == SIGTERM || sig == SIGHUP || (sig == SIGINT && !interactive)) {
            for (i = 0; i < napps; i++)
                if (!apps[i].done)
                    kill(apps[i].pid, sig);
            if (sig == SIGTERM && !stopping) {
                stopping = 1;
                deadline = now_mono() + stop_timeout;
            }
        }
    }
}

static int run_wait(int argc, char **argv) {
    pid_t init = 0;
    int interactive = 0, i;
    double kill_after = -1, deadline = 0;
    for (i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--init") && i + 1 < argc)
            init = (pid_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--kill-after") && i + 1 < argc)
            kill_after = atof(argv[++i]) / 1000.0;
        else if (!strcmp(argv[i], "--interactive"))
            interactive = 1;
        else if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else
            return usage();
    }
    if (init <= 0 || i >= argc)
        return usage();
    char **finish = argv + i;
    int nfinish = argc - i;
    sigset_t set;
    block_watched(&set);
    int wstatus = 0;
    for (;;) {
        pid_t pid = waitpid(init, &wstatus, WNOHANG);
        if (pid == init)
            break;
        if (pid < 0 && errno == ECHILD) {
            wstatus = 254 << 8;
            break;
        }
        if (deadline > 0 && now_mono() >= deadline) {
            kill(init, SIGKILL);
            deadline = 0;
            continue;
        }
        int sig = wait_signal(&set, deadline);
        if (sig == SIGTERM || sig == SIGHUP || (sig == SIGINT && !interactive))
            kill(init, sig);
        if (sig == SIGTERM && kill_after >= 0 && deadline == 0)
            deadline = now_mono() + kill_after;
    }
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    char **args = calloc((size_t)nfinish + 2, sizeof *args);
    char arg[64];
    if (!args)
        return 254;
    for (i = 0; i < nfinish; i++)
        args[i] = finish[i];
    snprintf(arg, sizeof arg, "--wstatus=%d", wstatus);
    args[nfinish] = arg;
    execv(args[0], args);
    fprintf(stderr, "podrun: stage1 idle: exec %s: %s\n", args[0], strerror(errno));
    return 254;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return usage();
    if (!strcmp(argv[1], "init"))
        return run_init(argc - 2, argv + 2);
    if (!strcmp(argv[1], "wait"))
        return run_wait(argc - 2, argv + 2);
    return usage();
}
