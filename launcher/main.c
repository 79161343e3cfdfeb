/* main.c - the `shardlm` command: dispatches to the subcommands. */
#include <stdio.h>
#include <string.h>

#include "flags.h"
#include "shardlm_cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    {"generate", shardlm_cmd_generate, "generate text, optionally across W local ranks"},
    {"serve", shardlm_cmd_serve, "serve an OpenAI-compatible HTTP API (rank 0 of W)"},
    {"worker", shardlm_cmd_worker, "run a worker rank (RING_CONFIG names its ring)"},
    {"launch", shardlm_cmd_launch, "spawn W local ranks of any shardlm command"},
    {"info", shardlm_cmd_info, "print a GGUF model's metadata, tensors and tokenizer"},
    {"tokenize", shardlm_cmd_tokenize, "print the token ids of a text"},
    {"synth", shardlm_cmd_synth, "write a synthetic llama GGUF with random weights"},
    {"bench", shardlm_cmd_bench, "prompt and decode tokens/s of a model (like llama-bench)"},
    {"bench-mem", shardlm_cmd_bench_mem, "STREAM-style memory bandwidth (triad and read)"},
    {"bench-matmul", shardlm_cmd_bench_matmul, "time one matmul kernel: ms, GMAC/s, GB/s of weights"},
    {"bench-comm", shardlm_cmd_bench_comm, "benchmark the all-reduce over the ring"},
    {"doctor", shardlm_cmd_doctor, "check this machine (CPU, GPUs, NCCL, MPI) and its ring config"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: shardlm COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-12s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "\nRun `shardlm COMMAND --help` for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "help") && argc > 2 && !strcmp(argv[2], "--markdown")) {
        shardlm_flags_markdown(stdout); /* docs/CLI.md's flag tables; tests/cli/docs_check.sh compares */
        return 0;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("shardlm 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "shardlm: unknown command '%s' (try `shardlm --help`)\n", argv[1]);
    return 2;
}
