#ifndef CMARIADB_H
#define CMARIADB_H
// MariaDB Connector/C for Swift. The include path comes from pkg-config (libmariadb: -I/usr/include/mariadb).
// glibc's headers first, as for CUring, so `fd_set` & co. come from the same modules everywhere.
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/select.h>
#include <poll.h>
#include <mysql.h>
#include <errmsg.h>

// Why a shim at all: `mysql_library_init` is a function-like macro, which Swift cannot call.
static inline int CMaria_library_init(void) { return mysql_server_init(0, 0, 0); }

#endif
