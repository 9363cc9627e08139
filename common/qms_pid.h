/*  qms_pid.h - getpid() asked of the kernel once per process (qms_pid.c).

    libzmq calls getpid() at every signal between two sockets, to detect a
    fork; glibc makes each call a system call.  qms_pid.c defines getpid()
    in the executable, read at start and in the child of each fork(), so
    those calls cost nothing.  An executable takes it by linking with
    "-u getpid --export-dynamic-symbol=getpid" (CMakeLists.txt).
*/
#ifndef QMS_PID_H_INCLUDED
#define QMS_PID_H_INCLUDED

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Selftest: the library's calls resolve here, the value is the kernel's,
    and a fork's child has its own. */
void qms_pid_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
