/*
 * The bare accept loop: the least a super-server can do per connection,
 * as a reference of the limit for the benchmark. Built by the benchmark
 * twice, not shipped:
 *
 *   forkloop   (default)            accept, fork, dup2 onto 0/1/2, execve
 *   spawnloop  (-DUSE_POSIX_SPAWN)  accept, posix_spawn with the three
 *                                   dup2 as file actions (glibc spawns
 *                                   with clone(CLONE_VM|CLONE_VFORK): no
 *                                   copy of the address space)
 *
 * usage: LOOP PORT UID GID PROGRAM ARGV0 [ARGS...]
 *
 * Binds 127.0.0.1:PORT, then drops the whole loop to UID and GID (no
 * supplementary groups), so every child runs as that user without an id
 * change of its own, as tcpserver -u -g does. Children get an environment
 * of PATH alone and are reaped before each accept. No logging, no limits,
 * no session, no signal reset: a real super-server owes its children more,
 * and this is the floor it is measured against.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static char *child_env[] = {"PATH=/usr/bin:/bin", NULL};

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1;
    struct sockaddr_in a;

    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 1024) < 0)
        return -1;
    return fd;
}

static int spawn(const char *path, char **argv, int conn)
{
#ifdef USE_POSIX_SPAWN
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int err;

    /* conn is close-on-exec; its copies on 0, 1 and 2 are not. */
    if (posix_spawn_file_actions_init(&fa) != 0)
        return -1;
    posix_spawn_file_actions_adddup2(&fa, conn, 0);
    posix_spawn_file_actions_adddup2(&fa, conn, 1);
    posix_spawn_file_actions_adddup2(&fa, conn, 2);
    err = posix_spawn(&pid, path, &fa, NULL, argv, child_env);
    posix_spawn_file_actions_destroy(&fa);
    return err == 0 ? 0 : -1;
#else
    pid_t pid = fork();

    if (pid == 0) {
        if (dup2(conn, 0) < 0 || dup2(conn, 1) < 0 || dup2(conn, 2) < 0)
            _exit(126);
        execve(path, argv, child_env);
        _exit(127);
    }
    return pid < 0 ? -1 : 0;
#endif
}

int main(int argc, char **argv)
{
    int l;

    if (argc < 6) {
        fprintf(stderr, "usage: %s PORT UID GID PROGRAM ARGV0 [ARGS...]\n", argv[0]);
        return 2;
    }
    l = listen_on(atoi(argv[1]));
    if (l < 0) {
        perror("listen");
        return 1;
    }
    /* Groups before gid before uid: after setuid the others are refused. */
    if (setgroups(0, NULL) < 0 || setgid((gid_t)atoi(argv[3])) < 0 ||
        setuid((uid_t)atoi(argv[2])) < 0) {
        perror("drop ids");
        return 1;
    }
    for (;;) {
        int c;

        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("accept");
            return 1;
        }
        if (spawn(argv[4], argv + 5, c) < 0)
            perror("spawn");
        close(c);
    }
}
