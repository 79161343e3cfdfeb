/* placeholder */ typedef int shardlm_placeholder_collectives;
