/* doctor_probe.c - what `shardlm doctor` reports about this machine: CPU
 * and SIMD features, memory, the CUDA driver/runtime and GPUs, NCCL, MPI
 * and what this binary was built with. CUDA and NCCL are probed with
 * dlopen at run time, so a CPU-only build can still tell whether a GPU
 * machine is ready for a CUDA build. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__aarch64__)
#include <sys/auxv.h>
#endif

#include "doctor.h"
#include "numa.h"
#include "shardlm_comm.h"
#include "shardlm_common.h"
#include "shardlm_kernels.h"

void shardlm_doctor_probe_build(shardlm_doctor *d)
{
    int cuda = 0, nccl = 0, mpi = 0;
#ifdef SHARDLM_HAVE_CUDA
    cuda = 1;
#endif
#ifdef SHARDLM_HAVE_NCCL
    nccl = 1;
#endif
#ifdef SHARDLM_HAVE_MPI
    mpi = 1;
#endif
    cJSON *b = cJSON_AddObjectToObject(d->root, "build");
    cJSON_AddBoolToObject(b, "cuda", cuda);
    cJSON_AddBoolToObject(b, "nccl", nccl);
    cJSON_AddBoolToObject(b, "mpi", mpi);
    shardlm_doctor_check(d, "build", 1, "shardlm 0.1.0 built with CUDA %s, NCCL %s, MPI %s", cuda ? "yes" : "no",
                         nccl ? "yes" : "no", mpi ? "yes" : "no");
}

/* The first "model name" (x86) or "CPU part"/"Hardware" line (Arm). */
static void cpu_model(char *out, size_t cap)
{
    snprintf(out, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon || (strncmp(line, "model name", 10) && strncmp(line, "Hardware", 8))) continue;
        colon++;
        while (*colon == ' ' || *colon == '\t') colon++;
        colon[strcspn(colon, "\n")] = 0;
        snprintf(out, cap, "%s", colon);
        break;
    }
    fclose(f);
}

/* The SIMD features the kernels care about (the same cpuid bits as
 * kernels/cpu/matmul.c's choice of path). */
static void cpu_simd(cJSON *arr)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) cJSON_AddItemToArray(arr, cJSON_CreateString("sse4.2"));
    if (__builtin_cpu_supports("avx")) cJSON_AddItemToArray(arr, cJSON_CreateString("avx"));
    if (__builtin_cpu_supports("avx2")) cJSON_AddItemToArray(arr, cJSON_CreateString("avx2"));
    if (__builtin_cpu_supports("fma")) cJSON_AddItemToArray(arr, cJSON_CreateString("fma"));
    if (shardlm_cpu_has_f16c()) cJSON_AddItemToArray(arr, cJSON_CreateString("f16c"));
    if (__builtin_cpu_supports("avx512f")) cJSON_AddItemToArray(arr, cJSON_CreateString("avx512f"));
    if (__builtin_cpu_supports("avx512bw")) cJSON_AddItemToArray(arr, cJSON_CreateString("avx512bw"));
    if (__builtin_cpu_supports("avx512vl")) cJSON_AddItemToArray(arr, cJSON_CreateString("avx512vl"));
    if (__builtin_cpu_supports("avx512vnni")) cJSON_AddItemToArray(arr, cJSON_CreateString("avx512vnni"));
#elif defined(__aarch64__)
    unsigned long hw = getauxval(AT_HWCAP);
    cJSON_AddItemToArray(arr, cJSON_CreateString("neon"));
#ifdef HWCAP_ASIMDDP
    if (hw & HWCAP_ASIMDDP) cJSON_AddItemToArray(arr, cJSON_CreateString("dotprod"));
#endif
#ifdef HWCAP_SVE
    if (hw & HWCAP_SVE) cJSON_AddItemToArray(arr, cJSON_CreateString("sve"));
#endif
    (void)hw;
#else
    (void)arr;
#endif
}

void shardlm_doctor_probe_cpu(shardlm_doctor *d)
{
    char model[256], simd[256] = "";
    cpu_model(model, sizeof model);
    cJSON *c = cJSON_AddObjectToObject(d->root, "cpu");
    cJSON_AddStringToObject(c, "model", model);
    cJSON_AddNumberToObject(c, "logical_cpus", (double)sysconf(_SC_NPROCESSORS_ONLN));
    cJSON_AddNumberToObject(c, "physical_cores", shardlm_cpu_physical_cores());
    cJSON *arr = cJSON_AddArrayToObject(c, "simd");
    cpu_simd(arr);
    cJSON_AddStringToObject(c, "kernels", shardlm_kernels_isa());
    /* The path may keep a narrower kernel it does not beat: say which, per type. */
    cJSON *per = cJSON_AddObjectToObject(c, "kernel_by_type");
    char kb[48], kq4[48], kq8[48];
    for (size_t k = 0; k < SHARDLM_KERNELS_N_DTYPES; k++)
        cJSON_AddStringToObject(per, shardlm_dtype_name(shardlm_kernels_dtypes[k]),
                                shardlm_kernels_kernel(shardlm_kernels_dtypes[k], kb, sizeof kb));
    size_t n = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, arr) n += (size_t)snprintf(simd + n, n < sizeof simd ? sizeof simd - n : 0, "%s%s",
                                                      n ? " " : "", it->valuestring);
    shardlm_doctor_check(d, "cpu", 1, "%s; %ld logical CPUs, %d physical cores; SIMD: %s; kernels: %s (q4_0: %s, q8_0: %s)",
                         model, sysconf(_SC_NPROCESSORS_ONLN), shardlm_cpu_physical_cores(), n ? simd : "none",
                         shardlm_kernels_isa(), shardlm_kernels_kernel(SHARDLM_DT_Q4_0, kq4, sizeof kq4),
                         shardlm_kernels_kernel(SHARDLM_DT_Q8_0, kq8, sizeof kq8));
}

/* The NUMA nodes `--numa` would spread ranks over. */
void shardlm_doctor_probe_numa(shardlm_doctor *d)
{
    shardlm_numa_topo *t = malloc(sizeof *t);
    if (!t) return;
    cJSON *arr = cJSON_AddArrayToObject(d->root, "numa");
    int rc = shardlm_numa_read("/sys/devices/system/node", t);
    char line[512] = "";
    size_t n = 0;
    for (int i = 0; !rc && i < t->n; i++) {
        char cpus[256];
        shardlm_numa_format(&t->cpus[i], cpus, sizeof cpus);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "node", t->id[i]);
        cJSON_AddStringToObject(e, "cpus", cpus);
        cJSON_AddItemToArray(arr, e);
        if (n < sizeof line)
            n += (size_t)snprintf(line + n, sizeof line - n, "%snode%d: CPUs %s", i ? ", " : "", t->id[i], cpus);
    }
    if (rc) shardlm_doctor_check(d, "numa", 0, "%s", shardlm_err_get());
    else if (!t->n) shardlm_doctor_check(d, "numa", 1, "no NUMA nodes shown in /sys/devices/system/node; --numa splits "
                                          "the allowed CPUs");
    else shardlm_doctor_check(d, "numa", 1, "%d node%s with CPUs (%s)", t->n, t->n > 1 ? "s" : "", line);
    free(t);
}

/* A "Key: N kB" line of /proc/meminfo, in bytes; 0 when absent. */
static double meminfo_bytes(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    double v = 0;
    size_t k = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, k) && line[k] == ':') {
            v = strtod(line + k + 1, NULL) * 1024.0;
            break;
        }
    fclose(f);
    return v;
}

void shardlm_doctor_probe_memory(shardlm_doctor *d)
{
    double total = meminfo_bytes("MemTotal"), avail = meminfo_bytes("MemAvailable");
    cJSON *m = cJSON_AddObjectToObject(d->root, "memory");
    cJSON_AddNumberToObject(m, "total_bytes", total);
    cJSON_AddNumberToObject(m, "available_bytes", avail);
    shardlm_doctor_check(d, "memory", total > 0, "%.1f GiB total, %.1f GiB available", total / 1073741824.0,
                         avail / 1073741824.0);
}

/* CUDA driver API, declared here so no CUDA header is needed to build. */
typedef int (*cu_init_fn)(unsigned);
typedef int (*cu_int_fn)(int *);
typedef int (*cu_device_get_fn)(int *, int);
typedef int (*cu_name_fn)(char *, int, int);
typedef int (*cu_mem_fn)(size_t *, int);
typedef int (*cu_attr_fn)(int *, int, int);
#define CU_ATTR_CC_MAJOR 75
#define CU_ATTR_CC_MINOR 76
#define CU_ERROR_STUB_LIBRARY 34
#define CU_ERROR_NO_DEVICE 100

/* "12.4" from CUDA's 12040. */
static void cuda_version_str(int v, char *out, size_t cap)
{
    snprintf(out, cap, "%d.%d", v / 1000, (v % 1000) / 10);
}

static void *dlopen_first(const char *const *names, char *err, size_t cap)
{
    for (int i = 0; names[i]; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h) return h;
        if (i == 0) snprintf(err, cap, "%s", dlerror());
    }
    return NULL;
}

/* The GPUs, through the driver that is already loaded and initialised. */
static void cuda_devices(void *h, cJSON *cuda, char *line, size_t cap)
{
    cu_int_fn count_fn = (cu_int_fn)dlsym(h, "cuDeviceGetCount");
    cu_device_get_fn get_fn = (cu_device_get_fn)dlsym(h, "cuDeviceGet");
    cu_name_fn name_fn = (cu_name_fn)dlsym(h, "cuDeviceGetName");
    cu_mem_fn mem_fn = (cu_mem_fn)dlsym(h, "cuDeviceTotalMem_v2");
    cu_attr_fn attr_fn = (cu_attr_fn)dlsym(h, "cuDeviceGetAttribute");
    cJSON *devs = cJSON_AddArrayToObject(cuda, "devices");
    int n = 0;
    if (!count_fn || !get_fn || !name_fn || !mem_fn || !attr_fn || count_fn(&n)) n = 0;
    size_t k = strlen(line);
    k += (size_t)snprintf(line + k, k < cap ? cap - k : 0, "; %d GPU(s)", n);
    for (int i = 0; i < n; i++) {
        int dev = 0, maj = 0, min = 0;
        char name[256] = "?";
        size_t mem = 0;
        if (get_fn(&dev, i)) continue;
        name_fn(name, (int)sizeof name, dev);
        mem_fn(&mem, dev);
        attr_fn(&maj, CU_ATTR_CC_MAJOR, dev);
        attr_fn(&min, CU_ATTR_CC_MINOR, dev);
        char cc[16];
        snprintf(cc, sizeof cc, "%d.%d", maj, min);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", i);
        cJSON_AddStringToObject(o, "name", name);
        cJSON_AddNumberToObject(o, "total_memory_bytes", (double)mem);
        cJSON_AddStringToObject(o, "compute_capability", cc);
        cJSON_AddItemToArray(devs, o);
        k += (size_t)snprintf(line + k, k < cap ? cap - k : 0, "; GPU %d: %s, %.1f GiB, compute capability %s", i,
                              name, (double)mem / 1073741824.0, cc);
    }
}

/* The runtime library is optional: a CUDA build links it, a CPU build
 * only reports whether one is installed. */
static void cuda_runtime(cJSON *cuda, char *line, size_t cap)
{
    static const char *const names[] = {"libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0",
                                        NULL};
    char err[256] = "";
    void *h = dlopen_first(names, err, sizeof err);
    cu_int_fn ver_fn = h ? (cu_int_fn)dlsym(h, "cudaRuntimeGetVersion") : NULL;
    int v = 0;
    size_t k = strlen(line);
    if (ver_fn && ver_fn(&v) == 0) {
        char vs[32];
        cuda_version_str(v, vs, sizeof vs);
        cJSON_AddStringToObject(cuda, "runtime_version", vs);
        snprintf(line + k, k < cap ? cap - k : 0, "; runtime %s", vs);
    } else {
        cJSON_AddNullToObject(cuda, "runtime_version");
        snprintf(line + k, k < cap ? cap - k : 0, "; no CUDA runtime (libcudart.so not found)");
    }
    if (h) dlclose(h);
}

void shardlm_doctor_probe_cuda(shardlm_doctor *d)
{
    static const char *const names[] = {"libcuda.so.1", "libcuda.so", NULL};
    cJSON *cuda = cJSON_AddObjectToObject(d->root, "cuda");
    char line[2048] = "", err[256] = "";
    void *h = dlopen_first(names, err, sizeof err);
    cu_init_fn init_fn = h ? (cu_init_fn)dlsym(h, "cuInit") : NULL;
    cu_int_fn ver_fn = h ? (cu_int_fn)dlsym(h, "cuDriverGetVersion") : NULL;
    int ok = 1, v = 0, rc = -1;
    cJSON_AddBoolToObject(cuda, "driver", h != NULL);
    if (!h || !init_fn || !ver_fn) {
        cJSON_AddNullToObject(cuda, "driver_version");
        snprintf(line, sizeof line, "no CUDA driver (%s)", h ? "libcuda lacks cuInit" : err);
    } else if (ver_fn(&v) != 0 || (rc = init_fn(0)) != 0) {
        /* a stub library or no device is a machine without GPUs; anything
         * else is a driver that is installed but broken */
        ok = rc == CU_ERROR_STUB_LIBRARY || rc == CU_ERROR_NO_DEVICE;
        cJSON_AddNullToObject(cuda, "driver_version");
        snprintf(line, sizeof line, "CUDA driver present but cuInit failed with error %d%s", rc,
                 ok ? " (no GPU)" : "");
    } else {
        char vs[32];
        cuda_version_str(v, vs, sizeof vs);
        cJSON_AddStringToObject(cuda, "driver_version", vs);
        snprintf(line, sizeof line, "driver %s (CUDA %s)", vs, vs);
        cuda_devices(h, cuda, line, sizeof line);
    }
    cuda_runtime(cuda, line, sizeof line);
    if (h) dlclose(h);
    shardlm_doctor_check(d, "cuda", ok, "%s", line);
}

void shardlm_doctor_probe_nccl(shardlm_doctor *d)
{
    static const char *const names[] = {"libnccl.so.2", "libnccl.so", NULL};
    cJSON *nccl = cJSON_AddObjectToObject(d->root, "nccl");
    char err[256] = "";
    void *h = dlopen_first(names, err, sizeof err);
    cu_int_fn ver_fn = h ? (cu_int_fn)dlsym(h, "ncclGetVersion") : NULL;
    int v = 0;
    if (ver_fn && ver_fn(&v) == 0) {
        /* 2.9 and later encode major*10000 + minor*100 + patch, older major*1000 + minor*100 + patch */
        int maj = v >= 10000 ? v / 10000 : v / 1000, min = v >= 10000 ? v / 100 % 100 : v / 100 % 10;
        char vs[32];
        snprintf(vs, sizeof vs, "%d.%d.%d", maj, min, v % 100);
        cJSON_AddStringToObject(nccl, "version", vs);
        shardlm_doctor_check(d, "nccl", 1, "NCCL %s", vs);
    } else {
        cJSON_AddNullToObject(nccl, "version");
        shardlm_doctor_check(d, "nccl", 1, "no NCCL (%s)", h ? "ncclGetVersion failed" : err);
    }
    if (h) dlclose(h);
}

void shardlm_doctor_probe_mpi(shardlm_doctor *d)
{
    int built = shardlm_comm_mpi_built();
    const char *v = shardlm_comm_mpi_version();
    char first[160];
    snprintf(first, sizeof first, "%s", v ? v : "");
    first[strcspn(first, "\n")] = 0; /* MPICH's version string runs over many lines */
    for (char *t = first; *t; t++)
        if (*t == '\t') *t = ' ';
    cJSON *m = cJSON_AddObjectToObject(d->root, "mpi");
    cJSON_AddBoolToObject(m, "built", built);
    cJSON_AddStringToObject(m, "version", v ? v : "");
    cJSON_AddBoolToObject(m, "launched", shardlm_comm_mpi_launched());
    if (built)
        shardlm_doctor_check(d, "mpi", 1, "MPI backend built: %s%s", first,
                             shardlm_comm_mpi_launched() ? " (started by mpirun)" : "");
    else
        shardlm_doctor_check(d, "mpi", 1, "MPI backend not built");
}
