/* The world backends built into this binary, found by name: the one place
 * that knows which were built. */
#include "world_int.h"

#include "err.h"

#include <string.h>

static const mw_world_backend_ops_t *const backends[] = {
    &mw_world_tcp_ops,
#ifdef MW_HAVE_NCCL
    &mw_world_nccl_ops,
#endif
#ifdef MW_HAVE_CUDA_IPC
    &mw_world_cuda_ipc_ops,
#endif
};

const mw_world_backend_ops_t *mw_world_backend_find(const char *name, char *errstr,
                                                    size_t errstr_size)
{
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    if (strcmp(name, "nccl") == 0)
        mw_errf(MW_EINVAL, errstr, errstr_size,
                "world backend 'nccl' is not built into this binary (built without NCCL: no "
                "CUDA/NCCL found)");
    else if (strcmp(name, "cuda-ipc") == 0)
        mw_errf(MW_EINVAL, errstr, errstr_size,
                "world backend 'cuda-ipc' is not built into this binary (built without CUDA)");
    else
        mw_errf(MW_EINVAL, errstr, errstr_size, "unknown world backend '%s'", name);
    return NULL;
}
