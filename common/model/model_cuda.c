/* CUDA backend of mw_stage_new: weights copied to the device once, cuBLAS sgemm
 * per layer plus the kernels of model_kernels.cu. Built only with cuBLAS. */
#include "err.h"
#include "model.h"

#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <stdlib.h>

/* model_kernels.cu */
int mw_cuda_layernorm(const float *x, int rows, int n, const float *gamma, const float *beta,
                      float eps, float *y, cudaStream_t stream);
int mw_cuda_bias_act(float *y, const float *bias, const float *resid, int rows, int cols, int act,
                     cudaStream_t stream);

struct cuda_layer {
    const mw_layer_t *l;
    float *w, *b, *gamma, *beta; /* device copies */
};

struct cuda_stage {
    int first, last, max_batch, device;
    cudaStream_t stream;
    cublasHandle_t blas;
    struct cuda_layer *layers;
    float *weights; /* one device allocation for every tensor */
    float *x, *buf[2], *ln;
};

static void cuda_destroy(void *impl)
{
    struct cuda_stage *cs = impl;
    if (cs == NULL)
        return;
    cudaSetDevice(cs->device);
    if (cs->blas != NULL)
        cublasDestroy(cs->blas);
    if (cs->stream != NULL)
        cudaStreamDestroy(cs->stream);
    cudaFree(cs->weights);
    cudaFree(cs->x);
    cudaFree(cs->buf[0]);
    cudaFree(cs->buf[1]);
    cudaFree(cs->ln);
    free(cs->layers);
    free(cs);
}

/* Host in -> device, the layers, device -> host out; same calls whatever the cut. */
static int cuda_forward(void *impl, const float *in, int batch, float *out)
{
    struct cuda_stage *cs = impl;
    const float one = 1.0f, zero = 0.0f;
    const mw_layer_t *l0 = cs->layers[0].l, *ll = cs->layers[cs->last - cs->first - 1].l;
    if (cudaSetDevice(cs->device) != cudaSuccess ||
        cudaMemcpyAsync(cs->x, in, (size_t)batch * (size_t)l0->in * sizeof(float),
                        cudaMemcpyHostToDevice, cs->stream) != cudaSuccess)
        return MW_EIO;
    const float *x = cs->x;
    float *y = NULL;
    for (int i = 0; i < cs->last - cs->first; i++) {
        const struct cuda_layer *cl = &cs->layers[i];
        const mw_layer_t *l = cl->l;
        const float *a = x;
        y = cs->buf[i & 1];
        if (cl->gamma != NULL) {
            if (mw_cuda_layernorm(x, batch, l->in, cl->gamma, cl->beta, MW_LAYERNORM_EPS, cs->ln,
                                  cs->stream) != 0)
                return MW_EIO;
            a = cs->ln;
        }
        /* Row-major Y[batch, out] = A[batch, in] W^T is column-major Y^T = W A^T. */
        if (cublasSgemm(cs->blas, CUBLAS_OP_T, CUBLAS_OP_N, l->out, batch, l->in, &one, cl->w,
                        l->in, a, l->in, &zero, y, l->out) != CUBLAS_STATUS_SUCCESS)
            return MW_EIO;
        if (mw_cuda_bias_act(y, cl->b, l->residual ? x : NULL, batch, l->out, (int)l->activation,
                             cs->stream) != 0)
            return MW_EIO;
        x = y;
    }
    if (cudaMemcpyAsync(out, y, (size_t)batch * (size_t)ll->out * sizeof(float),
                        cudaMemcpyDeviceToHost, cs->stream) != cudaSuccess ||
        cudaStreamSynchronize(cs->stream) != cudaSuccess)
        return MW_EIO;
    return MW_OK;
}

static const mw_stage_ops_t cuda_ops = {
    .kind = "cuda",
    .forward = cuda_forward,
    .run = NULL,
    .destroy = cuda_destroy,
};

static float *upload(float **cursor, const float *host, size_t n, int *ok)
{
    float *d = *cursor;
    if (host == NULL)
        return NULL;
    if (cudaMemcpy(d, host, n * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess)
        *ok = 0;
    *cursor += n;
    return d;
}

int mw_stage_new_cuda(const mw_model_t *m, int first, int last, int max_batch, int device,
                      mw_stage_t **out, char *errstr, size_t errstr_size)
{
    int rc = MW_EIO;
    cudaError_t ce;
    struct cuda_stage *cs = calloc(1, sizeof(*cs));
    if (cs == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    cs->first = first;
    cs->last = last;
    cs->max_batch = max_batch;
    cs->device = device;
    cs->layers = calloc((size_t)(last - first), sizeof(*cs->layers));
    if (cs->layers == NULL) {
        rc = mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
        goto out_destroy;
    }
    if ((ce = cudaSetDevice(device)) != cudaSuccess ||
        (ce = cudaStreamCreateWithFlags(&cs->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        rc = mw_errf(MW_EUNAVAIL, errstr, errstr_size, "CUDA device %d: %s", device,
                     cudaGetErrorString(ce));
        goto out_destroy;
    }
    if (cublasCreate(&cs->blas) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(cs->blas, cs->stream) != CUBLAS_STATUS_SUCCESS ||
        cublasSetMathMode(cs->blas, CUBLAS_PEDANTIC_MATH) != CUBLAS_STATUS_SUCCESS) {
        rc =
            mw_errf(MW_EUNAVAIL, errstr, errstr_size, "CUDA device %d: cuBLAS init failed", device);
        goto out_destroy;
    }
    size_t floats = 0, width = 1, ln_width = 1;
    for (int i = first; i < last; i++) {
        const mw_layer_t *l = mw_model_layer(m, i);
        floats += (size_t)l->in * (size_t)l->out + (size_t)l->out + (l->ln_gamma ? 2u * l->in : 0);
        width = (size_t)l->out > width ? (size_t)l->out : width;
        width = (size_t)l->in > width ? (size_t)l->in : width;
        ln_width = l->ln_gamma && (size_t)l->in > ln_width ? (size_t)l->in : ln_width;
    }
    const size_t rows = (size_t)max_batch;
    if ((ce = cudaMalloc((void **)&cs->weights, floats * sizeof(float))) != cudaSuccess ||
        (ce = cudaMalloc((void **)&cs->x, rows * width * sizeof(float))) != cudaSuccess ||
        (ce = cudaMalloc((void **)&cs->buf[0], rows * width * sizeof(float))) != cudaSuccess ||
        (ce = cudaMalloc((void **)&cs->buf[1], rows * width * sizeof(float))) != cudaSuccess ||
        (ce = cudaMalloc((void **)&cs->ln, rows * ln_width * sizeof(float))) != cudaSuccess) {
        rc = mw_errf(MW_ENOMEM, errstr, errstr_size, "CUDA device %d: %s (%zu MiB of weights)",
                     device, cudaGetErrorString(ce), floats * sizeof(float) >> 20);
        goto out_destroy;
    }
    float *cursor = cs->weights;
    int ok = 1;
    for (int i = first; i < last; i++) {
        struct cuda_layer *cl = &cs->layers[i - first];
        const mw_layer_t *l = mw_model_layer(m, i);
        cl->l = l;
        cl->w = upload(&cursor, l->weight, (size_t)l->in * (size_t)l->out, &ok);
        cl->b = upload(&cursor, l->bias, (size_t)l->out, &ok);
        cl->gamma = upload(&cursor, l->ln_gamma, (size_t)l->in, &ok);
        cl->beta = upload(&cursor, l->ln_beta, (size_t)l->in, &ok);
    }
    if (!ok) {
        rc = mw_errf(MW_EIO, errstr, errstr_size, "CUDA device %d: weight upload failed", device);
        goto out_destroy;
    }
    mw_stage_info_t info = {
        .first_layer = first,
        .last_layer = last,
        .max_batch = max_batch,
        .in_features = mw_model_layer(m, first)->in,
        .out_features = mw_model_layer(m, last - 1)->out,
    };
    return mw_stage_wrap(&cuda_ops, cs, &info, out, errstr, errstr_size);
out_destroy:
    cuda_destroy(cs);
    return rc;
}
