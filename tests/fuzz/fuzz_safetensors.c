/* libFuzzer target: the safetensors reader and the reference-model validation on any bytes. */
#include "model/model.h"
#include "model/safetensors.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    mw_safetensors_t *st;
    if (mw_safetensors_parse(data, size, &st, err, sizeof(err)) != 0)
        return 0;
    /* Every accepted tensor must lie inside the input. */
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < mw_safetensors_count(st); i++) {
        const mw_st_tensor_t *t = mw_safetensors_tensor(st, i);
        if (mw_safetensors_find(st, t->name) != t)
            __builtin_trap();
        if (t->nbytes > 0)
            sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->nbytes - 1];
    }
    (void)mw_safetensors_metadata(st, "format");
    mw_model_t *m;
    if (mw_model_from_safetensors(st, &m, err, sizeof(err)) == 0) {
        int n = mw_model_num_layers(m);
        (void)mw_model_flops(m, 0, n);
        mw_model_destroy(m);
    }
    (void)sink;
    return 0;
}
