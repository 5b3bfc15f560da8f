/* Example stage plug-in: y = scale * x + shift on f32 tensors of any shape.
 * Config JSON: {"scale": 2.0, "shift": 0.5}; scale defaults to stage_index + 1,
 * shift to 0. Build: cc -shared -fPIC -I<mwserve>/common example_stage.c -o example_stage.so */
#include "model/mw_stage_abi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const uint32_t mw_plugin_abi_version = MW_PLUGIN_ABI_VERSION;

struct state {
    float scale, shift;
    float *out; /* the output tensor's memory: ours until the next forward */
    size_t cap;
};

/* The number after "key": in a flat JSON object, or def (a real plug-in would use a JSON library).
 */
static int json_number(const char *json, const char *key, double def, double *out)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *p = strstr(json, pat);
    *out = def;
    if (p == NULL)
        return 0;
    p += strlen(pat);
    while (*p == ' ' || *p == ':')
        p++;
    char *end;
    *out = strtod(p, &end);
    return end == p ? -1 : 0;
}

int mw_plugin_init(const char *config_json, int stage_index, int device, void **state, char *errstr,
                   size_t errstr_size)
{
    double scale, shift;
    if (device >= 0) {
        snprintf(errstr, errstr_size, "example_stage runs on the CPU only (got device %d)", device);
        return 1;
    }
    if (json_number(config_json, "scale", stage_index + 1.0, &scale) != 0 ||
        json_number(config_json, "shift", 0.0, &shift) != 0) {
        snprintf(errstr, errstr_size, "config %s: \"scale\" and \"shift\" must be numbers",
                 config_json);
        return 1;
    }
    struct state *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        return 1;
    }
    s->scale = (float)scale;
    s->shift = (float)shift;
    *state = s;
    return 0;
}

int mw_plugin_forward(void *state, const mw_plugin_tensor *in, mw_plugin_tensor *out, char *errstr,
                      size_t errstr_size)
{
    struct state *s = state;
    if (in->dtype != MW_PLUGIN_F32 || in->device != -1) {
        snprintf(errstr, errstr_size, "example_stage takes f32 host tensors (dtype %d)",
                 (int)in->dtype);
        return 1;
    }
    size_t n = 1;
    for (int i = 0; i < in->ndim; i++)
        n *= (size_t)in->shape[i];
    if (n > s->cap) {
        float *p = realloc(s->out, n * sizeof(float));
        if (p == NULL) {
            snprintf(errstr, errstr_size, "out of memory");
            return 1;
        }
        s->out = p;
        s->cap = n;
    }
    const float *x = in->data;
    for (size_t i = 0; i < n; i++)
        s->out[i] = s->scale * x[i] + s->shift;
    *out = *in; /* same dtype, shape and device */
    out->data = s->out;
    return 0;
}

void mw_plugin_destroy(void *state)
{
    struct state *s = state;
    free(s->out);
    free(s);
}
