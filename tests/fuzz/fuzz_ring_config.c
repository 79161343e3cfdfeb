/* fuzz_ring_config.c - libFuzzer harness for RING_CONFIG files
 * (ring/config.c): any bytes as the file. A config that loads must also
 * validate, and write out and load back to the same values. */
#include "fuzz_util.h"

#include "shardlm_common.h"
#include "shardlm_ring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    shardlm_ring_config c;
    memset(&c, 0, sizeof c);
    if (shardlm_ring_config_load(fuzz_as_file(data, size), &c) != SHARDLM_OK) return 0;
    if (shardlm_ring_config_validate(&c, "fuzz") != SHARDLM_OK) abort(); /* loaded means valid */
    char path[] = "/tmp/shardlm-fuzz-ring-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) abort();
    close(fd);
    shardlm_ring_config back;
    memset(&back, 0, sizeof back);
    int rc = shardlm_ring_config_write(path, &c);
    if (!rc) rc = shardlm_ring_config_load(path, &back);
    unlink(path);
    if (rc || memcmp(&c, &back, sizeof c) != 0) abort(); /* write then load is the identity */
    return 0;
}
