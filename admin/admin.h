/*  admin.h - the administration commands (users, db).

        qmessageserver users list | show NAME | sessions NAME | delete NAME
                             | logout NAME | reset-password NAME   [options]
        qmessageserver db backup FILE | check                     [options]

    The command never opens SQLite itself: it talks QMS_ST_ADMIN records to
    a store actor.  When a server runs on the data directory, that is the
    running store, reached on its admin socket (and the running router is
    told to end a user's session at once, QMS_RT_KICK_USER); when none
    runs, the command starts the store actor in its own process on an
    inproc:// endpoint.  docs/ADMIN.md is the operator's guide.

    The records, op codes and admin sockets the command shares with the
    actors are in common/qms_admin.h.
*/
#ifndef ADMIN_H_INCLUDED
#define ADMIN_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Exit codes of the commands. */
#define ADMIN_EXIT_OK           0
#define ADMIN_EXIT_FAILED       1   /* no such user, check failed, refused */
#define ADMIN_EXIT_USAGE        2
#define ADMIN_EXIT_UNREACHABLE  3   /* no store, or the running router did not answer */

/*  True for the first word of an administration command ("users", "db"). */
bool admin_is_command (const char *word);

/*  The whole command: argv as main got it (argv [1] is the command word).
    Returns the exit code. */
int admin_main (int argc, char **argv);

void admin_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
