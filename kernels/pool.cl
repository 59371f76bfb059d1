/* pool.cl -- max and average pooling (NCHW, float32, no padding), forward and backward.
 *
 * A window (i, j) covers rows i*SH .. i*SH+KH-1 and columns j*SW .. j*SW+KW-1.
 * Forward: one work-item per output element, global = (OW, OH, N*C).
 * Backward: gather form, one work-item per input element, global = (W, H, N*C): each input
 * element sums the gradients of the windows that contain it, so stride != kernel (overlapping
 * or gapped windows) needs no atomics.
 */

/* y = max over the window; arg = position of the first maximum inside the window (p*KW+q).
 * A NaN wins its window (the first NaN, as numpy's argmax), so NaN is never hidden. */
__kernel void maxpool2d_fwd(__global const float *x, __global float *y, __global int *arg,
                            const int H, const int W, const int OH, const int OW,
                            const int KH, const int KW, const int SH, const int SW)
{
    const int j = get_global_id(0), i = get_global_id(1), nc = get_global_id(2);
    if (j >= OW || i >= OH)
        return;
    __global const float *xw = x + (size_t)nc * H * W + (i * SH) * W + j * SW;
    float best = xw[0];
    int best_at = 0;
    for (int p = 0; p < KH; ++p)
        for (int q = 0; q < KW; ++q) {
            const float v = xw[p * W + q];
            /* strict: ties keep the first maximum, as numpy argmax; the first NaN wins */
            if (v > best || (isnan(v) && !isnan(best))) {
                best = v;
                best_at = p * KW + q;
            }
        }
    const size_t o = (size_t)nc * OH * OW + i * OW + j;
    y[o] = best;
    arg[o] = best_at;
}

/* First and last window index (along one axis) whose window contains position h. */
inline int2 windows_containing(int h, int K, int S, int OUT)
{
    const int a = h - K + 1;
    const int lo = a <= 0 ? 0 : (a + S - 1) / S;
    const int hi = min(OUT - 1, h / S);
    return (int2)(lo, hi);
}

/* dx[h, x] = sum of dy over the windows that contain (h, x) and whose maximum was there. */
__kernel void maxpool2d_bwd(__global const float *dy, __global const int *arg, __global float *dx,
                            const int H, const int W, const int OH, const int OW,
                            const int KH, const int KW, const int SH, const int SW)
{
    const int xx = get_global_id(0), h = get_global_id(1), nc = get_global_id(2);
    if (xx >= W || h >= H)
        return;
    const int2 ri = windows_containing(h, KH, SH, OH);
    const int2 rj = windows_containing(xx, KW, SW, OW);
    const size_t base = (size_t)nc * OH * OW;
    float acc = 0.0f;
    for (int i = ri.x; i <= ri.y; ++i)
        for (int j = rj.x; j <= rj.y; ++j) {
            const size_t o = base + i * OW + j;
            if (arg[o] == (h - i * SH) * KW + (xx - j * SW))
                acc += dy[o];
        }
    dx[(size_t)nc * H * W + h * W + xx] = acc;
}

/* y = mean over the window. */
__kernel void avgpool2d_fwd(__global const float *x, __global float *y,
                            const int H, const int W, const int OH, const int OW,
                            const int KH, const int KW, const int SH, const int SW)
{
    const int j = get_global_id(0), i = get_global_id(1), nc = get_global_id(2);
    if (j >= OW || i >= OH)
        return;
    __global const float *xw = x + (size_t)nc * H * W + (i * SH) * W + j * SW;
    float s = 0.0f;
    for (int p = 0; p < KH; ++p)
        for (int q = 0; q < KW; ++q)
            s += xw[p * W + q];
    y[(size_t)nc * OH * OW + i * OW + j] = s / (float)(KH * KW);
}

/* dx[h, x] = sum over the windows containing (h, x) of dy / (KH*KW). */
__kernel void avgpool2d_bwd(__global const float *dy, __global float *dx,
                            const int H, const int W, const int OH, const int OW,
                            const int KH, const int KW, const int SH, const int SW)
{
    const int xx = get_global_id(0), h = get_global_id(1), nc = get_global_id(2);
    if (xx >= W || h >= H)
        return;
    const int2 ri = windows_containing(h, KH, SH, OH);
    const int2 rj = windows_containing(xx, KW, SW, OW);
    const size_t base = (size_t)nc * OH * OW;
    const float inv = 1.0f / (float)(KH * KW);
    float acc = 0.0f;
    for (int i = ri.x; i <= ri.y; ++i)
        for (int j = rj.x; j <= rj.y; ++j)
            acc += dy[base + i * OW + j] * inv;
    dx[(size_t)nc * H * W + h * W + xx] = acc;
}

/* maxpool2d_bwd for windows that tile the input (stride == kernel), the same values as the
 * gather kernel: one work-item per cell (i, j) of a KH x KW grid over the input, global =
 * (ceil(W/KW), ceil(H/KH), N*C). A cell inside the output writes dy where the recorded maximum
 * was and 0 elsewhere; a cell past the last window (H or W not a multiple) writes zeros. */
__kernel void maxpool2d_bwd_tiled(__global const float *dy, __global const int *arg,
                                  __global float *dx, const int H, const int W, const int OH,
                                  const int OW, const int KH, const int KW)
{
    const int j = get_global_id(0), i = get_global_id(1), nc = get_global_id(2);
    const int cw = (W + KW - 1) / KW, ch = (H + KH - 1) / KH;
    if (j >= cw || i >= ch)
        return;
    const int inside = i < OH && j < OW;
    const size_t o = (size_t)nc * OH * OW + i * OW + j;
    const int at = inside ? arg[o] : -1;
    const float g = inside ? 0.0f + dy[o] : 0.0f;     /* 0 + dy, as the gather sum (-0 -> +0) */
    __global float *dxw = dx + (size_t)nc * H * W + (i * KH) * W + j * KW;
    const int ph = min(KH, H - i * KH), pw = min(KW, W - j * KW);
    for (int p = 0; p < ph; ++p)
        for (int q = 0; q < pw; ++q)
            dxw[p * W + q] = (p * KW + q == at) ? g : 0.0f;
}
