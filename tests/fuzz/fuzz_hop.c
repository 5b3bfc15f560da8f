/* libFuzzer target: bytes decoded as a data-plane header frame (a batch's
 * hop), as a worker decodes each header it receives; what decodes must
 * re-encode to the same bytes. */
#include "worker/hop.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    mw_hop_t hop;
    if (mw_hop_decode(&hop, data, size, err, sizeof(err)) != 0) {
        if (err[0] == '\0')
            abort(); /* every rejection names its problem */
        return 0;
    }
    uint8_t again[512];
    int n = mw_hop_encode(&hop, again, sizeof(again));
    if (n != (int)size || memcmp(again, data, size) != 0)
        abort();
    return 0;
}
