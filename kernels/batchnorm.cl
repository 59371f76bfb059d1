/* batchnorm.cl -- 2-D batch normalisation over (N, H, W) per channel (NCHW, float32).
 *
 * Training forward, with m = N*H*W values per channel:
 *   mean_c = sum x / m ;  var_c = sum (x - mean_c)^2 / m  (biased, two passes for accuracy)
 *   inv_std_c = 1 / sqrt(var_c + eps) ;  x_hat = (x - mean_c) * inv_std_c ;  y = gamma*x_hat + beta
 *   running_mean = (1-momentum)*running_mean + momentum*mean_c
 *   running_var  = (1-momentum)*running_var  + momentum*var_c*m/(m-1)   (unbiased, as PyTorch)
 * Backward:
 *   dbeta = sum dy ;  dgamma = sum dy*x_hat
 *   dx = gamma*inv_std/m * (m*dy - dbeta - x_hat*dgamma)
 * Per-channel reductions use one work-group of LS work-items per channel (LS a #define) on
 * GPUs; on CPU devices the *_channel and *_plane kernels at the end.
 */

#ifndef LS
#define LS 64
#endif

inline float wg_sum(__local float *buf, float v)
{
    const int lid = get_local_id(0);
    buf[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = LS / 2; step > 0; step >>= 1) {
        if (lid < step)
            buf[lid] += buf[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float s = buf[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return s;
}

/* channel c's batch statistics and running statistics from its mean and biased variance */
inline void store_stats(const int c, const float mu, const float var, __global float *mean,
                        __global float *inv_std, __global float *running_mean,
                        __global float *running_var, const float momentum, const float eps,
                        const float unbias)
{
    mean[c] = mu;
    inv_std[c] = 1.0f / sqrt(var + eps);
    running_mean[c] = running_mean[c] * (1.0f - momentum) + momentum * mu;
    running_var[c] = running_var[c] * (1.0f - momentum) + momentum * (var * unbias);
}

/* Batch statistics of channel c = group id; updates the running statistics in place.
 * global = C * LS, local = LS.  unbias = m / max(m-1, 1) from the host. */
__kernel __attribute__((reqd_work_group_size(LS, 1, 1)))
void bn_stats(__global const float *x, __global float *mean, __global float *inv_std,
              __global float *running_mean, __global float *running_var,
              const int N, const int C, const int HW,
              const float momentum, const float eps, const float unbias)
{
    __local float buf[LS];
    const int c = get_group_id(0), lid = get_local_id(0);
    const int m = N * HW;
    float s = 0.0f;
    for (int e = lid; e < m; e += LS) {
        const int n = e / HW, k = e - n * HW;
        s += x[((size_t)n * C + c) * HW + k];
    }
    const float mu = wg_sum(buf, s) / (float)m;
    float s2 = 0.0f;
    for (int e = lid; e < m; e += LS) {
        const int n = e / HW, k = e - n * HW;
        const float d = x[((size_t)n * C + c) * HW + k] - mu;
        s2 += d * d;
    }
    const float var = wg_sum(buf, s2) / (float)m;
    if (lid == 0)
        store_stats(c, mu, var, mean, inv_std, running_mean, running_var, momentum, eps, unbias);
}

/* x_hat and y from the batch statistics; one work-item per element (total = N*C*HW). */
__kernel void bn_apply_train(__global const float *x, __global const float *mean,
                             __global const float *inv_std, __global const float *gamma,
                             __global const float *beta, __global float *x_hat, __global float *y,
                             const int C, const int HW, const int total)
{
    const int i = get_global_id(0);
    if (i >= total)
        return;
    const int c = (i / HW) % C;
    const float xh = (x[i] - mean[c]) * inv_std[c];
    x_hat[i] = xh;
    y[i] = gamma[c] * xh + beta[c];
}

/* Evaluation: y = (x - running_mean) * gamma / sqrt(running_var + eps) + beta. */
__kernel void bn_eval(__global const float *x, __global const float *running_mean,
                      __global const float *running_var, __global const float *gamma,
                      __global const float *beta, __global float *y,
                      const int C, const int HW, const int total, const float eps)
{
    const int i = get_global_id(0);
    if (i >= total)
        return;
    const int c = (i / HW) % C;
    const float scale = gamma[c] * (1.0f / sqrt(running_var[c] + eps));
    y[i] = (x[i] - running_mean[c]) * scale + beta[c];
}

/* dbeta[c] = sum dy, dgamma[c] = sum dy * x_hat; global = C * LS, local = LS. */
__kernel __attribute__((reqd_work_group_size(LS, 1, 1)))
void bn_bwd_reduce(__global const float *dy, __global const float *x_hat,
                   __global float *dgamma, __global float *dbeta,
                   const int N, const int C, const int HW)
{
    __local float buf[LS];
    const int c = get_group_id(0), lid = get_local_id(0);
    const int m = N * HW;
    float sb = 0.0f, sg = 0.0f;
    for (int e = lid; e < m; e += LS) {
        const int n = e / HW, k = e - n * HW;
        const size_t idx = ((size_t)n * C + c) * HW + k;
        const float d = dy[idx];
        sb += d;
        sg += d * x_hat[idx];
    }
    const float tb = wg_sum(buf, sb);
    const float tg = wg_sum(buf, sg);
    if (lid == 0) {
        dbeta[c] = tb;
        dgamma[c] = tg;
    }
}

/* dx = gamma*inv_std/m * (m*dy - dbeta - x_hat*dgamma); one work-item per element. */
__kernel void bn_bwd_dx(__global const float *dy, __global const float *x_hat,
                        __global const float *gamma, __global const float *inv_std,
                        __global const float *dgamma, __global const float *dbeta,
                        __global float *dx, const int C, const int HW, const int total,
                        const float m)
{
    const int i = get_global_id(0);
    if (i >= total)
        return;
    const int c = (i / HW) % C;
    dx[i] = gamma[c] * inv_std[c] / m * (m * dy[i] - dbeta[c] - x_hat[i] * dgamma[c]);
}

/* ---- the same on CPU devices: a channel or a plane per work-item, in float16 vectors ----------
 * A work-group per channel reduces through local memory and barriers, which a CPU device runs
 * as loops over the group's work-items; there one work-item walks a whole channel (the
 * statistics, C work-items) or a whole plane (the element-wise passes, N*C work-items), its
 * HW contiguous values 16 at a time. Same formulas and two passes as above. */

/* sum of p[0 .. len-1] */
inline float plane_sum(__global const float *p, const int len)
{
    float16 acc = (float16)(0.0f);
    int k = 0;
    for (; k + 16 <= len; k += 16)
        acc += vload16(0, p + k);
    float s = 0.0f;
    for (; k < len; ++k)
        s += p[k];
    return s + acc.s0 + acc.s1 + acc.s2 + acc.s3 + acc.s4 + acc.s5 + acc.s6 + acc.s7
             + acc.s8 + acc.s9 + acc.sa + acc.sb + acc.sc + acc.sd + acc.se + acc.sf;
}

/* sum of (p[k] - mu)^2 */
inline float plane_sq(__global const float *p, const int len, const float mu)
{
    float16 acc = (float16)(0.0f);
    int k = 0;
    for (; k + 16 <= len; k += 16) {
        const float16 d = vload16(0, p + k) - mu;
        acc = mad(d, d, acc);
    }
    float s = 0.0f;
    for (; k < len; ++k)
        s += (p[k] - mu) * (p[k] - mu);
    return s + acc.s0 + acc.s1 + acc.s2 + acc.s3 + acc.s4 + acc.s5 + acc.s6 + acc.s7
             + acc.s8 + acc.s9 + acc.sa + acc.sb + acc.sc + acc.sd + acc.se + acc.sf;
}

/* As bn_stats, one work-item per channel: global = (C). */
__kernel void bn_stats_channel(__global const float *x, __global float *mean,
                               __global float *inv_std, __global float *running_mean,
                               __global float *running_var, const int N, const int C,
                               const int HW, const float momentum, const float eps,
                               const float unbias)
{
    const int c = get_global_id(0);
    if (c >= C)
        return;
    const int m = N * HW;
    float s = 0.0f;
    for (int n = 0; n < N; ++n)
        s += plane_sum(x + ((size_t)n * C + c) * HW, HW);
    const float mu = s / (float)m;
    float s2 = 0.0f;
    for (int n = 0; n < N; ++n)
        s2 += plane_sq(x + ((size_t)n * C + c) * HW, HW, mu);
    store_stats(c, mu, s2 / (float)m, mean, inv_std, running_mean, running_var, momentum, eps,
                unbias);
}

/* As bn_apply_train, one work-item per plane (n, c): global = (C, N). */
__kernel void bn_apply_train_plane(__global const float *x, __global const float *mean,
                                   __global const float *inv_std, __global const float *gamma,
                                   __global const float *beta, __global float *x_hat,
                                   __global float *y, const int C, const int HW)
{
    const int c = get_global_id(0), n = get_global_id(1);
    if (c >= C)
        return;
    const size_t at = ((size_t)n * C + c) * HW;
    const float mu = mean[c], is = inv_std[c], g = gamma[c], b = beta[c];
    int k = 0;
    for (; k + 16 <= HW; k += 16) {
        const float16 xh = (vload16(0, x + at + k) - mu) * is;
        vstore16(xh, 0, x_hat + at + k);
        vstore16(mad((float16)(g), xh, (float16)(b)), 0, y + at + k);
    }
    for (; k < HW; ++k) {
        const float xh = (x[at + k] - mu) * is;
        x_hat[at + k] = xh;
        y[at + k] = g * xh + b;
    }
}

/* As bn_bwd_reduce, one work-item per channel: global = (C). */
__kernel void bn_bwd_reduce_channel(__global const float *dy, __global const float *x_hat,
                                    __global float *dgamma, __global float *dbeta,
                                    const int N, const int C, const int HW)
{
    const int c = get_global_id(0);
    if (c >= C)
        return;
    float16 ab = (float16)(0.0f), ag = (float16)(0.0f);
    float sb = 0.0f, sg = 0.0f;
    for (int n = 0; n < N; ++n) {
        const size_t at = ((size_t)n * C + c) * HW;
        int k = 0;
        for (; k + 16 <= HW; k += 16) {
            const float16 d = vload16(0, dy + at + k);
            ab += d;
            ag = mad(d, vload16(0, x_hat + at + k), ag);
        }
        for (; k < HW; ++k) {
            sb += dy[at + k];
            sg += dy[at + k] * x_hat[at + k];
        }
    }
    float tb[16], tg[16];
    vstore16(ab, 0, tb);
    vstore16(ag, 0, tg);
    for (int e = 0; e < 16; ++e) {
        sb += tb[e];
        sg += tg[e];
    }
    dbeta[c] = sb;
    dgamma[c] = sg;
}

/* As bn_bwd_dx, one work-item per plane (n, c): global = (C, N). */
__kernel void bn_bwd_dx_plane(__global const float *dy, __global const float *x_hat,
                              __global const float *gamma, __global const float *inv_std,
                              __global const float *dgamma, __global const float *dbeta,
                              __global float *dx, const int C, const int HW, const float m)
{
    const int c = get_global_id(0), n = get_global_id(1);
    if (c >= C)
        return;
    const size_t at = ((size_t)n * C + c) * HW;
    const float scale = gamma[c] * inv_std[c] / m, db = dbeta[c], dg = dgamma[c];
    int k = 0;
    for (; k + 16 <= HW; k += 16)
        vstore16(scale * (m * vload16(0, dy + at + k) - db - vload16(0, x_hat + at + k) * dg),
                 0, dx + at + k);
    for (; k < HW; ++k)
        dx[at + k] = scale * (m * dy[at + k] - db - x_hat[at + k] * dg);
}

/* As bn_eval, one work-item per plane (n, c): global = (C, N). */
__kernel void bn_eval_plane(__global const float *x, __global const float *running_mean,
                            __global const float *running_var, __global const float *gamma,
                            __global const float *beta, __global float *y, const int C,
                            const int HW, const float eps)
{
    const int c = get_global_id(0), n = get_global_id(1);
    if (c >= C)
        return;
    const size_t at = ((size_t)n * C + c) * HW;
    const float mu = running_mean[c], b = beta[c];
    const float scale = gamma[c] * (1.0f / sqrt(running_var[c] + eps));
    int k = 0;
    for (; k + 16 <= HW; k += 16)
        vstore16((vload16(0, x + at + k) - mu) * scale + b, 0, y + at + k);
    for (; k < HW; ++k)
        y[at + k] = (x[at + k] - mu) * scale + b;
}
