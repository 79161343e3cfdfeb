/* PLACEHOLDER - replaced by its owner before the first commit. */
#include <stdio.h>
#include "shardlm_cli.h"
int shardlm_cmd_worker(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "not built yet\n"); return 1; }
