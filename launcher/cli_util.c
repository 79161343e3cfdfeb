/* cli_util.c - small helpers shared by the subcommands. */
#include <limits.h>
#include <unistd.h>

#include "shardlm_cli.h"

const char *shardlm_cli_self(void)
{
    static char path[PATH_MAX];
    if (!path[0]) {
        ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
        if (n <= 0) return "shardlm";
        path[n] = 0;
    }
    return path;
}
