/* placeholder */ typedef int shardlm_placeholder_kernels_cpu;
