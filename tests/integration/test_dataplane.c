/* The data plane in one process, without Kafka: the test stands in for an
 * origin (a source and sink of batches, speaking hop frames over a real TCP
 * world) in front of the last stage of a 2-stage pipeline, run by
 * mw_dataplane_new with the world handed over as the control plane would.
 * Redis (from tests/run.sh) is only the worlds' rendezvous. */
#include "model/model.h"
#include "test_world_util.h"
#include "worker/dataplane.h"
#include "worker/hop.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define HIDDEN  32
#define OUTPUTS 8

typedef struct seam {
    char model_path[512];
    mw_model_t *model;
    mw_stage_t *reference; /* the last stage's layers, computed here */
    mw_worlds_t *ctx_src, *ctx_dp;
    mw_world_t *w_src, *w_dp;
    mw_dataplane_t *dp;
} seam_t;

/* A model of 4 layers (16 -> 32 -> 32 -> 32 -> 8), the data plane at stage 1
 * (layers 2..4) and a world between it and the source, handed over. */
static int seam_setup(void **state)
{
    char err[512], name[160];
    seam_t *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    const mw_model_spec_t spec = {.layers = 4,
                                  .inputs = 16,
                                  .hidden = HIDDEN,
                                  .outputs = OUTPUTS,
                                  .seed = 11,
                                  .activation = MW_ACT_GELU};
    const char *dir = getenv("MWTEST_DIR") ? getenv("MWTEST_DIR") : "/tmp";
    snprintf(s->model_path, sizeof(s->model_path), "%s/%s.safetensors", dir, mwt_name("seam"));
    assert_int_equal(mw_model_generate(&spec, s->model_path, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_model_open(s->model_path, &s->model, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_stage_new(s->model, 2, 4, 256, -1, &s->reference, err, sizeof(err)), MW_OK);

    s->ctx_src = wt_ctx(5000);
    s->ctx_dp = wt_ctx(5000);
    snprintf(name, sizeof(name), "%s.s0-src--s1-w1", mwt_name("seam"));
    mw_world_opts_t o = {.name = name, .epoch = 1, .size = 2, .backend = "tcp", .timeout_ms = 5000};
    o.rank = 0;
    assert_int_equal(mw_world_join(s->ctx_src, &o, &s->w_src, err, sizeof(err)), MW_OK);
    o.rank = 1;
    assert_int_equal(mw_world_join(s->ctx_dp, &o, &s->w_dp, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_world_wait_ready(s->w_src, 10000, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_world_wait_ready(s->w_dp, 10000, err, sizeof(err)), MW_OK);

    mw_config_t cfg;
    mwt_config(&cfg);
    const mw_dataplane_opts_t dopts = {.worker_id = "w1",
                                       .pipeline = "seam",
                                       .stage = 1,
                                       .nstages = 2,
                                       .model_path = s->model_path,
                                       .first_layer = 2,
                                       .last_layer = 4,
                                       .device = -1,
                                       .worlds = s->ctx_dp};
    int rc = mw_dataplane_new(&cfg, &dopts, &s->dp, err, sizeof(err));
    mw_config_fini(&cfg);
    if (rc != MW_OK)
        fail_msg("data plane: %s", err);
    mw_dataplane_world_added(s->dp, s->w_dp, "src", 0, 1);
    *state = s;
    return 0;
}

static int seam_teardown(void **state)
{
    seam_t *s = *state;
    mw_dataplane_destroy(s->dp); /* drops the world it was handed */
    mw_world_destroy(s->w_dp);
    mw_world_destroy(s->w_src);
    mw_worlds_destroy(s->ctx_dp);
    mw_worlds_destroy(s->ctx_src);
    mw_stage_destroy(s->reference);
    mw_model_destroy(s->model);
    unlink(s->model_path);
    free(s);
    return 0;
}

/* The source sends batch `batch` of `nrequests` requests: rows x width of x. */
static void send_batch(seam_t *s, uint64_t batch, uint32_t nrequests, int rows, int width,
                       const float *x)
{
    char err[256];
    uint8_t frame[MW_WORLD_HEADER_MAX];
    mw_hop_t hop = {.type = MW_HOP_TENSOR,
                    .stage = 0,
                    .incarnation = 7,
                    .batch = batch,
                    .nrequests = nrequests,
                    .desc = {.dtype = MW_DTYPE_F32, .ndim = 2, .shape = {rows, width}},
                    .nbytes = (uint64_t)rows * (uint64_t)width * sizeof(float)};
    snprintf(hop.origin, sizeof(hop.origin), "src");
    int len = mw_hop_encode(&hop, frame, sizeof(frame));
    assert_true(len > 0);
    assert_int_equal(mw_world_send_header(s->w_src, 1, frame, (size_t)len, 10000, err, sizeof(err)),
                     MW_OK);
    assert_int_equal(mw_world_send(s->w_src, 1, &hop.desc, x, 10000, err, sizeof(err)), MW_OK);
}

/* The source receives the next hop from the stage, and its tensor if any. */
static void *recv_hop(seam_t *s, mw_hop_t *hop)
{
    char err[256];
    uint8_t frame[MW_WORLD_HEADER_MAX];
    size_t len = 0;
    assert_int_equal(
        mw_world_recv_header(s->w_src, 1, frame, sizeof(frame), &len, 10000, err, sizeof(err)),
        MW_OK);
    if (mw_hop_decode(hop, frame, len, err, sizeof(err)) != MW_OK)
        fail_msg("hop from the stage: %s", err);
    if (hop->type != MW_HOP_TENSOR)
        return NULL;
    void *y = malloc(hop->nbytes);
    mw_tensor_desc_t desc;
    assert_non_null(y);
    assert_int_equal(mw_world_recv(s->w_src, 1, y, hop->nbytes, &desc, 10000, err, sizeof(err)),
                     MW_OK);
    return y;
}

static void batch_is_computed_in_one_call_and_returned_whole_to_its_origin(void **state)
{
    seam_t *s = *state;
    const int rows = 37;
    float x[37 * HIDDEN], want[37 * OUTPUTS];
    for (int i = 0; i < rows * HIDDEN; i++)
        x[i] = (float)((i * 7919) % 2001 - 1000) / 1000.0f;
    /* Each row alone, as the reference runner computes a request. */
    for (int r = 0; r < rows; r++)
        assert_int_equal(mw_stage_forward(s->reference, x + r * HIDDEN, 1, want + r * OUTPUTS),
                         MW_OK);

    send_batch(s, 1, 5, rows, HIDDEN, x);
    mw_hop_t hop;
    float *y = recv_hop(s, &hop);
    assert_non_null(y);
    assert_int_equal(hop.stage, 1);
    assert_string_equal(hop.origin, "src");
    assert_true(hop.batch == 1 && hop.nrequests == 5 && hop.incarnation == 7);
    assert_int_equal(hop.desc.ndim, 2);
    assert_int_equal(hop.desc.shape[0], rows);
    assert_int_equal(hop.desc.shape[1], OUTPUTS);
    assert_memory_equal(y, want, sizeof(want));
    free(y);

    mw_dataplane_stats_t st;
    assert_true(mwt_wait_for((mw_dataplane_stats(s->dp, &st), st.processed == 1), 5000));
    assert_int_equal(st.rows, rows);
}

static void batch_the_stage_rejects_comes_back_as_an_abort_of_that_batch(void **state)
{
    seam_t *s = *state;
    float x[3 * (HIDDEN - 1)] = {0};
    send_batch(s, 2, 2, 3, HIDDEN - 1, x); /* one feature short */
    mw_hop_t hop;
    assert_null(recv_hop(s, &hop));
    assert_int_equal(hop.type, MW_HOP_ABORT);
    assert_int_equal(hop.stage, 1);
    assert_true(hop.batch == 2 && hop.nrequests == 2);

    /* The world stays usable: the next batch is served. */
    float ok[HIDDEN] = {0}, want[OUTPUTS];
    assert_int_equal(mw_stage_forward(s->reference, ok, 1, want), MW_OK);
    send_batch(s, 3, 1, 1, HIDDEN, ok);
    float *y = recv_hop(s, &hop);
    assert_non_null(y);
    assert_true(hop.batch == 3);
    assert_memory_equal(y, want, sizeof(want));
    free(y);
    mw_dataplane_stats_t st;
    assert_true(mwt_wait_for((mw_dataplane_stats(s->dp, &st), st.aborts == 1), 5000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            batch_is_computed_in_one_call_and_returned_whole_to_its_origin, seam_setup,
            seam_teardown),
        cmocka_unit_test_setup_teardown(
            batch_the_stage_rejects_comes_back_as_an_abort_of_that_batch, seam_setup,
            seam_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
