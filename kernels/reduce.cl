/* reduce.cl -- reductions shared by several op families.
 * LS (#define, power of two) is the work-group size of the reducing kernels.
 * Built without fast-math flags: the non-finite test must see NaN and infinity. */

#ifndef LS
#define LS 64
#endif

/* out[b] = sum_{a, c} x[a, b, c] for x viewed as (A, B, Cn).  One work-group per b:
 * global = B * LS, local = LS.  Used for biases' gradients (conv: (N, O, OH*OW);
 * dense: (N, O, 1)) and to add the partial sums of conv2d_bwd_dw ((S, O*C*KH*KW, 1)). */
__kernel __attribute__((reqd_work_group_size(LS, 1, 1)))
void sum_axes02(__global const float *x, __global float *out,
                const int A, const int B, const int Cn)
{
    __local float part[LS];
    const int b = get_group_id(0), lid = get_local_id(0);
    float s = 0.0f;
    const int total = A * Cn;
    for (int e = lid; e < total; e += LS) {
        const int a = e / Cn, c = e - a * Cn;
        s += x[((size_t)a * B + b) * Cn + c];
    }
    part[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = LS / 2; step > 0; step >>= 1) {
        if (lid < step)
            part[lid] += part[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        out[b] = part[0];
}

/* out[j] = sum_s x[s * n + j]: adds S partial arrays of n elements (one work-item each). */
__kernel void sum_parts(__global const float *x, __global float *out, const int S, const int n)
{
    const int j = get_global_id(0);
    if (j >= n)
        return;
    float s = 0.0f;
    for (int k = 0; k < S; ++k)
        s += x[(size_t)k * n + j];
    out[j] = s;
}

/* Two sum_parts in one launch (a convolution's weight and bias gradients): out_a[j] =
 * sum_s a[s * na + j] for j < na, out_b[j - na] = sum_s b[s * nb + j - na] for the next nb. */
__kernel void sum_parts_two(__global const float *a, __global float *out_a, const int na,
                            __global const float *b, __global float *out_b, const int nb,
                            const int S)
{
    const int j = get_global_id(0);
    if (j >= na + nb)
        return;
    __global const float *x = j < na ? a : b;
    const int n = j < na ? na : nb, i = j < na ? j : j - na;
    float s = 0.0f;
    for (int k = 0; k < S; ++k)
        s += x[(size_t)k * n + i];
    if (j < na)
        out_a[i] = s;
    else
        out_b[i] = s;
}

/* flag[0] = 1 if any of the n elements is NaN or infinite (exponent bits all ones; a bit test
 * so that no compiler option can fold it away).  The host zeroes flag first. */
__kernel void any_nonfinite(__global const float *x, __global int *flag, const int n)
{
    const int stride = get_global_size(0);
    int bad = 0;
    for (int i = get_global_id(0); i < n; i += stride)
        bad |= (as_uint(x[i]) & 0x7F800000u) == 0x7F800000u;
    if (bad)
        atomic_or(flag, 1);
}

/* Sum of squares, in two kernels so that only one number comes back to the host.
 * sum_squares_parts: each of the G work-groups (global = G * LS, local = LS) adds x[i]^2 over
 * its strided share of the n elements; parts[offset + group] = that work-group's sum.
 * sum_all: one work-group; out[0] = sum of parts[0 .. count). */
__kernel __attribute__((reqd_work_group_size(LS, 1, 1)))
void sum_squares_parts(__global const float *x, __global float *parts, const int n,
                       const int offset)
{
    __local float part[LS];
    const int lid = get_local_id(0);
    const int stride = get_global_size(0);
    float s = 0.0f;
    for (int i = get_global_id(0); i < n; i += stride)
        s += x[i] * x[i];
    part[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = LS / 2; step > 0; step >>= 1) {
        if (lid < step)
            part[lid] += part[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        parts[offset + get_group_id(0)] = part[0];
}

__kernel __attribute__((reqd_work_group_size(LS, 1, 1)))
void sum_all(__global const float *parts, __global float *out, const int count)
{
    __local float part[LS];
    const int lid = get_local_id(0);
    float s = 0.0f;
    for (int i = lid; i < count; i += LS)
        s += parts[i];
    part[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = LS / 2; step > 0; step >>= 1) {
        if (lid < step)
            part[lid] += part[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        out[0] = part[0];
}
