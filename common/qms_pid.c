/*  qms_pid.c - getpid() that asks the kernel once per process.

    libzmq 4.3 guards its signalling against use across fork(): every
    signal it sends, waits for and reads between two sockets first calls
    getpid() (signaler.cpp, under HAVE_FORK).  glibc stopped caching the
    pid in 2.25, so each of those is a system call: measured here, 5.4 per
    delivered message in the gateway thread alone, each paying the
    paravirtualised interrupt enable on its way out of the kernel.

    This definition, in the executable, comes before libc's in the
    dynamic linker's search order, so libzmq (and czmq, libwebsockets)
    bind to it.  The pid is read at start and again in the child of every
    fork(), through pthread_atfork: it is always the caller's own.  What it
    does not cover is a raw clone() without fork handlers whose child then
    calls getpid() through the PLT; nothing in this program makes one
    (system() and posix_spawn() children run exec at once).

    It is compiled into each executable (not the static libraries), so an
    embedding program keeps libc's getpid() unless it opts in. */

#define _GNU_SOURCE
#include "qms_pid.h"

#include <assert.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

static atomic_int s_pid;

static void
s_read_pid (void)
{
    atomic_store_explicit (&s_pid, (int) syscall (SYS_getpid), memory_order_relaxed);
}

__attribute__ ((constructor)) static void
s_start (void)
{
    s_read_pid ();
    pthread_atfork (NULL, NULL, s_read_pid);
}

pid_t
getpid (void)
{
    int pid = atomic_load_explicit (&s_pid, memory_order_relaxed);
    return pid ? (pid_t) pid : (pid_t) syscall (SYS_getpid);
}

/* ------------------------------------------------------------------------ */

void
qms_pid_test (bool verbose)
{
    if (verbose)
        printf (" * qms_pid: ");
    /*  The global scope, where libzmq's getpid() call is bound, finds this
        definition, not libc's (it would not without the link options). */
    void *found = dlsym (RTLD_DEFAULT, "getpid");
    assert (found == (void *) getpid);
    pid_t self = (pid_t) syscall (SYS_getpid);
    assert (getpid () == self);
    /*  A fork's child gets its own pid, here and in the libraries. */
    for (int round = 0; round < 3; round++) {
        pid_t child = fork ();
        assert (child >= 0);
        if (child == 0) {
            pid_t (*lib_getpid) (void) = (pid_t (*) (void)) dlsym (RTLD_DEFAULT, "getpid");
            pid_t mine = (pid_t) syscall (SYS_getpid);
            _exit (getpid () == mine && lib_getpid () == mine && mine != self ? 0 : 1);
        }
        int status = 0;
        assert (waitpid (child, &status, 0) == child);
        assert (WIFEXITED (status) && WEXITSTATUS (status) == 0);
    }
    assert (getpid () == self);
    if (verbose)
        printf ("OK\n");
}
