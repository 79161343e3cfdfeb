/* shardlm_cli.h - the subcommands of the `shardlm` executable. Each takes the
 * arguments after its name and returns the process exit status (0, 1 or 2). */
#ifndef SHARDLM_CLI_H
#define SHARDLM_CLI_H

int shardlm_cmd_generate(int argc, char **argv);
int shardlm_cmd_worker(int argc, char **argv);
int shardlm_cmd_serve(int argc, char **argv);
int shardlm_cmd_launch(int argc, char **argv);
int shardlm_cmd_info(int argc, char **argv);
int shardlm_cmd_tokenize(int argc, char **argv);
int shardlm_cmd_synth(int argc, char **argv);
int shardlm_cmd_bench_comm(int argc, char **argv);
int shardlm_cmd_bench(int argc, char **argv);
int shardlm_cmd_bench_mem(int argc, char **argv);
int shardlm_cmd_bench_matmul(int argc, char **argv);
int shardlm_cmd_doctor(int argc, char **argv);

/* Path of the running executable, for spawning workers. */
const char *shardlm_cli_self(void);

#endif
