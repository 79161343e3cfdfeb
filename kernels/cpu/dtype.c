/* dtype.c - the table of every ggml tensor type id: its name, block size
 * and bytes per block, and whether shardlm can compute with it. The GGUF
 * reader uses the sizes to validate any tensor it knows, so `shardlm info`
 * can describe a file whose types shardlm cannot run; the loader refuses
 * those by name. Sizes are those of ggml's block structs (ggml-common.h). */
#include <stdio.h>
#include <strings.h>

#include "shardlm_kernels.h"

typedef struct {
    const char *name;   /* NULL: no such id */
    uint16_t elems;     /* per block; 0: layout no longer defined */
    uint16_t bytes;
    uint8_t supported;
} dtype_info;

/* Ids 4/5 (q4_2, q4_3) and 31-33, 36-38 (interleaved q4_0/iq4_nl files) were
 * removed from ggml: named, but their layouts are not known here. */
static const dtype_info g_types[] = {
    [0] = {"f32", 1, 4, 1},
    [1] = {"f16", 1, 2, 1},
    [2] = {"q4_0", 32, 18, 1},
    [3] = {"q4_1", 32, 20, 1},
    [4] = {"q4_2", 0, 0, 0},
    [5] = {"q4_3", 0, 0, 0},
    [6] = {"q5_0", 32, 22, 1},
    [7] = {"q5_1", 32, 24, 1},
    [8] = {"q8_0", 32, 34, 1},
    [9] = {"q8_1", 32, 36, 0},
    [10] = {"q2_k", 256, 84, 1},
    [11] = {"q3_k", 256, 110, 1},
    [12] = {"q4_k", 256, 144, 1},
    [13] = {"q5_k", 256, 176, 1},
    [14] = {"q6_k", 256, 210, 1},
    [15] = {"q8_k", 256, 292, 0},
    [16] = {"iq2_xxs", 256, 66, 0},
    [17] = {"iq2_xs", 256, 74, 0},
    [18] = {"iq3_xxs", 256, 98, 0},
    [19] = {"iq1_s", 256, 50, 0},
    [20] = {"iq4_nl", 32, 18, 1},
    [21] = {"iq3_s", 256, 110, 0},
    [22] = {"iq2_s", 256, 82, 0},
    [23] = {"iq4_xs", 256, 136, 1},
    [24] = {"i8", 1, 1, 0},
    [25] = {"i16", 1, 2, 0},
    [26] = {"i32", 1, 4, 0},
    [27] = {"i64", 1, 8, 0},
    [28] = {"f64", 1, 8, 0},
    [29] = {"iq1_m", 256, 56, 0},
    [30] = {"bf16", 1, 2, 1},
    [31] = {"q4_0_4_4", 0, 0, 0},
    [32] = {"q4_0_4_8", 0, 0, 0},
    [33] = {"q4_0_8_8", 0, 0, 0},
    [34] = {"tq1_0", 256, 54, 0},
    [35] = {"tq2_0", 256, 66, 0},
    [36] = {"iq4_nl_4_4", 0, 0, 0},
    [37] = {"iq4_nl_4_8", 0, 0, 0},
    [38] = {"iq4_nl_8_8", 0, 0, 0},
    [39] = {"mxfp4", 32, 17, 0},
    [40] = {"nvfp4", 64, 36, 0},
    [41] = {"q1_0", 128, 18, 0},
    [42] = {"q2_0", 64, 18, 0},
};

#define N_TYPES (sizeof g_types / sizeof g_types[0])

static const dtype_info *info(uint32_t type) { return type < N_TYPES && g_types[type].name ? &g_types[type] : NULL; }

int shardlm_dtype_supported(uint32_t type)
{
    const dtype_info *d = info(type);
    return d && d->supported;
}

int shardlm_dtype_known(uint32_t type)
{
    const dtype_info *d = info(type);
    return d && d->elems;
}

const char *shardlm_dtype_name(uint32_t type)
{
    const dtype_info *d = info(type);
    if (d) return d->name;
    /* Per thread, so concurrent callers never see each other's text. */
    static _Thread_local char buf[24];
    snprintf(buf, sizeof buf, "type#%u", (unsigned)type);
    return buf;
}

int shardlm_dtype_parse(const char *name)
{
    if (!name) return -1;
    for (uint32_t t = 0; t < N_TYPES; t++)
        if (g_types[t].name && !strcasecmp(name, g_types[t].name)) return (int)t;
    return -1;
}

size_t shardlm_dtype_block_elems(uint32_t type)
{
    const dtype_info *d = info(type);
    return d ? d->elems : 0;
}

size_t shardlm_dtype_block_bytes(uint32_t type)
{
    const dtype_info *d = info(type);
    return d ? d->bytes : 0;
}

size_t shardlm_dtype_row_bytes(uint32_t type, uint64_t n)
{
    size_t be = shardlm_dtype_block_elems(type), bb = shardlm_dtype_block_bytes(type);
    if (!be || n % be) return 0;
    uint64_t blocks = n / be;
    if (blocks > SIZE_MAX / bb) return 0;
    return (size_t)blocks * bb;
}

/* In id order; tests/test_quant.c checks it against the table. */
const char *shardlm_dtype_supported_names(void)
{
    return "f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs, bf16";
}
