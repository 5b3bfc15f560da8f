/* Fuzzes the .npy header parser with whole files: an accepted file must
 * describe a data range inside the input, and a header written for its dtype
 * and shape must parse back to the same description. */
#include "err.h"
#include "ops/mwctl/npy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    mwctl_npy_t npy;
    if (mwctl_npy_parse(&npy, data, size, err, sizeof(err)) != MW_OK)
        return 0;
    if (npy.data_offset > size || npy.data_bytes != size - npy.data_offset)
        abort();
    char hdr[MWCTL_NPY_HEADER_MAX];
    size_t n = mwctl_npy_header(hdr, sizeof(hdr), npy.dtype, npy.ndim, npy.shape);
    if (n == 0 || n % 64 != 0)
        abort();
    /* The written header followed by no data parses when the array is empty. */
    mwctl_npy_t again;
    int rc = mwctl_npy_parse(&again, hdr, n, err, sizeof(err));
    if ((rc == MW_OK) != (npy.data_bytes == 0))
        abort();
    if (rc == MW_OK && (again.dtype != npy.dtype || again.ndim != npy.ndim ||
                        memcmp(again.shape, npy.shape, sizeof(npy.shape)) != 0))
        abort();
    return 0;
}
