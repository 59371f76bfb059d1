/* pool.cl -- max and average pooling (NCHW, float32), forward and backward.
 *
 * A window (i, j) covers rows i*SH-PT .. i*SH-PT+KH-1 and columns j*SW-PL .. j*SW-PL+KW-1,
 * where PT / PL are the top / left padding. The plain kernels take no padding and windows that
 * lie inside the input (the fast paths); the _padded ones read only the part of a window inside
 * the input (max pooling's padding is -inf and never wins; the average's divisor is
 * pool_count's), so windows may run into the padding and, in PyTorch's ceil mode, past it: the
 * host guarantees that every window overlaps the input.
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

/* y = max over the window's input elements; arg = position of the first maximum inside the
 * window, (r - r0)*KW + (q - s0) from the window's corner (r0, s0) in padded coordinates. */
__kernel void maxpool2d_fwd_padded(__global const float *x, __global float *y, __global int *arg,
                                   const int H, const int W, const int OH, const int OW,
                                   const int KH, const int KW, const int SH, const int SW,
                                   const int PT, const int PL)
{
    const int j = get_global_id(0), i = get_global_id(1), nc = get_global_id(2);
    if (j >= OW || i >= OH)
        return;
    const int r0 = i * SH - PT, s0 = j * SW - PL;
    const int r_lo = max(r0, 0), r_hi = min(r0 + KH, H);
    const int s_lo = max(s0, 0), s_hi = min(s0 + KW, W);
    __global const float *plane = x + (size_t)nc * H * W;
    float best = plane[r_lo * W + s_lo];
    int best_at = (r_lo - r0) * KW + (s_lo - s0);
    for (int r = r_lo; r < r_hi; ++r)
        for (int q = s_lo; q < s_hi; ++q) {
            const float v = plane[r * W + q];
            if (v > best) {          /* strict: ties keep the first maximum, as numpy argmax */
                best = v;
                best_at = (r - r0) * KW + (q - s0);
            }
        }
    const size_t o = (size_t)nc * OH * OW + i * OW + j;
    y[o] = best;
    arg[o] = best_at;
}

/* First and last window index (along one axis) whose window contains padded position h. */
inline int2 windows_containing(int h, int K, int S, int OUT)
{
    const int a = h - K + 1;
    const int lo = a <= 0 ? 0 : (a + S - 1) / S;
    const int hi = min(OUT - 1, h / S);
    return (int2)(lo, hi);
}

/* Rows (or columns) of the window starting at `start` that an average divides by: up to the
 * end of the trailing padding AFTER when INCLUDE (count_include_pad), else the input's only. */
inline int pool_count(int start, int K, int size, int after, int include)
{
    return include ? min(start + K, size + after) - start : min(start + K, size) - max(start, 0);
}

/* The max-pooling backward kernels take the top / left padding as compile-time constants
 * (-DPAD_T=.. -DPAD_L=..; 0 when not given), so the unpadded case compiles to the plain loops. */
#ifndef PAD_T
#define PAD_T 0
#endif
#ifndef PAD_L
#define PAD_L 0
#endif

/* dx[h, x] = sum of dy over the windows that contain (h, x) and whose maximum was there. */
__kernel void maxpool2d_bwd(__global const float *dy, __global const int *arg, __global float *dx,
                            const int H, const int W, const int OH, const int OW,
                            const int KH, const int KW, const int SH, const int SW)
{
    const int xx = get_global_id(0), h = get_global_id(1), nc = get_global_id(2);
    if (xx >= W || h >= H)
        return;
    const int hp = h + PAD_T, xp = xx + PAD_L;        /* padded coordinates */
    const int2 ri = windows_containing(hp, KH, SH, OH);
    const int2 rj = windows_containing(xp, KW, SW, OW);
    const size_t base = (size_t)nc * OH * OW;
    float acc = 0.0f;
    for (int i = ri.x; i <= ri.y; ++i)
        for (int j = rj.x; j <= rj.y; ++j) {
            const size_t o = base + i * OW + j;
            if (arg[o] == (hp - i * SH) * KW + (xp - j * SW))
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

/* y = sum over the window's input elements / pool_count(rows) * pool_count(columns). */
__kernel void avgpool2d_fwd_padded(__global const float *x, __global float *y,
                                   const int H, const int W, const int OH, const int OW,
                                   const int KH, const int KW, const int SH, const int SW,
                                   const int PT, const int PB, const int PL, const int PR,
                                   const int INCLUDE)
{
    const int j = get_global_id(0), i = get_global_id(1), nc = get_global_id(2);
    if (j >= OW || i >= OH)
        return;
    const int r0 = i * SH - PT, s0 = j * SW - PL;
    const int r_lo = max(r0, 0), r_hi = min(r0 + KH, H);
    const int s_lo = max(s0, 0), s_hi = min(s0 + KW, W);
    __global const float *plane = x + (size_t)nc * H * W;
    float s = 0.0f;
    for (int r = r_lo; r < r_hi; ++r)
        for (int q = s_lo; q < s_hi; ++q)
            s += plane[r * W + q];
    const int count = pool_count(r0, KH, H, PB, INCLUDE) * pool_count(s0, KW, W, PR, INCLUDE);
    y[(size_t)nc * OH * OW + i * OW + j] = s / (float)count;
}

/* dx[h, x] = sum over the windows containing (h, x) of dy / that window's divisor. */
__kernel void avgpool2d_bwd_padded(__global const float *dy, __global float *dx,
                                   const int H, const int W, const int OH, const int OW,
                                   const int KH, const int KW, const int SH, const int SW,
                                   const int PT, const int PB, const int PL, const int PR,
                                   const int INCLUDE)
{
    const int xx = get_global_id(0), h = get_global_id(1), nc = get_global_id(2);
    if (xx >= W || h >= H)
        return;
    const int2 ri = windows_containing(h + PT, KH, SH, OH);
    const int2 rj = windows_containing(xx + PL, KW, SW, OW);
    const size_t base = (size_t)nc * OH * OW;
    float acc = 0.0f;
    for (int i = ri.x; i <= ri.y; ++i) {
        const int rows = pool_count(i * SH - PT, KH, H, PB, INCLUDE);
        for (int j = rj.x; j <= rj.y; ++j) {
            const int cols = pool_count(j * SW - PL, KW, W, PR, INCLUDE);
            acc += dy[base + i * OW + j] / (float)(rows * cols);
        }
    }
    dx[(size_t)nc * H * W + h * W + xx] = acc;
}

/* maxpool2d_bwd for windows that tile the padded input (stride == kernel), the same values as
 * the gather kernel: one work-item per cell (i, j) of a KH x KW grid over the padded input,
 * global = (ceil((W+PAD_L)/KW), ceil((H+PAD_T)/KH), N*C). A cell inside the output writes, on
 * its input part (rows p0..ph-1 and columns q0..pw-1 of the cell), dy where the recorded
 * maximum was and 0 elsewhere; a cell past the last window (H or W not a multiple) writes
 * zeros. */
__kernel void maxpool2d_bwd_tiled(__global const float *dy, __global const int *arg,
                                  __global float *dx, const int H, const int W, const int OH,
                                  const int OW, const int KH, const int KW)
{
    const int j = get_global_id(0), i = get_global_id(1), nc = get_global_id(2);
    const int cw = (W + PAD_L + KW - 1) / KW, ch = (H + PAD_T + KH - 1) / KH;
    if (j >= cw || i >= ch)
        return;
    const int inside = i < OH && j < OW;
    const size_t o = (size_t)nc * OH * OW + i * OW + j;
    const int at = inside ? arg[o] : -1;
    const float g = inside ? 0.0f + dy[o] : 0.0f;     /* 0 + dy, as the gather sum (-0 -> +0) */
    const int r0 = i * KH - PAD_T, s0 = j * KW - PAD_L;   /* the cell's corner (maybe padding) */
    __global float *plane = dx + (size_t)nc * H * W;
    const int p0 = PAD_T ? max(-r0, 0) : 0, ph = min(KH, H - r0);
    const int q0 = PAD_L ? max(-s0, 0) : 0, pw = min(KW, W - s0);
    for (int p = p0; p < ph; ++p)
        for (int q = q0; q < pw; ++q)
            plane[(r0 + p) * W + s0 + q] = (p * KW + q == at) ? g : 0.0f;
}

/* Global average pooling: y[nc] = mean of the HW values of plane nc. One work-item per plane,
 * global = (N*C). The planes it sees are small (the last feature maps of a network), so a
 * serial sum per plane keeps every work-item busy without a work-group reduction. */
__kernel void global_avgpool2d_fwd(__global const float *x, __global float *y, const int NC,
                                   const int HW)
{
    const int nc = get_global_id(0);
    if (nc >= NC)
        return;
    __global const float *plane = x + (size_t)nc * HW;
    float s = 0.0f;
    for (int k = 0; k < HW; ++k)
        s += plane[k];
    y[nc] = s / (float)HW;
}

/* dx[nc, k] = dy[nc] / HW: one work-item per input element, global = (N*C*HW). */
__kernel void global_avgpool2d_bwd(__global const float *dy, __global float *dx, const int total,
                                   const int HW)
{
    const int e = get_global_id(0);
    if (e >= total)
        return;
    dx[e] = dy[e / HW] / (float)HW;
}

/* ---- 2x2 windows at stride 2 without padding (the common case), 8 outputs per work-item ----
 * Forward: two input rows of 16 columns as vectors, the window's four candidates as its even
 * and odd lanes; the same rule as maxpool2d_fwd (strictly greater wins, the first NaN wins),
 * lane by lane. A row's last block of fewer than 8 outputs, in a row of at least 8, computes
 * the row's last 8 windows as vectors (overlapping the block before it) and stores the ones
 * that are its own; only rows of fewer than 8 outputs load their columns one by one.
 * global = (ceil(OW/8), OH, N*C); needs W >= 2*OW, H >= 2*OH. */
inline void take8(float8 v, int k, float8 *best, int8 *at)
{
    const int8 c = isgreater(v, *best) | (isnan(v) & ~isnan(*best));
    *best = select(*best, v, c);
    *at = select(*at, (int8)(k), c);
}

/* The 8 windows over the two rows r0, r1 (16 columns each as vectors a, b) */
inline void max8(const float16 a, const float16 b, float8 *best, int8 *at)
{
    *best = a.even;
    *at = (int8)(0);
    take8(a.odd, 1, best, at);
    take8(b.even, 2, best, at);
    take8(b.odd, 3, best, at);
}

__kernel void maxpool2x2_fwd(__global const float *x, __global float *y, __global int *arg,
                             const int H, const int W, const int OH, const int OW)
{
    int j0 = get_global_id(0) * 8;
    const int i = get_global_id(1), nc = get_global_id(2);
    if (j0 >= OW || i >= OH)
        return;
    /* a row's last, short block: the row's last 8 windows, lanes from ``own`` on are its own */
    int own = 0;
    if (j0 + 8 > OW && OW >= 8) {
        own = j0 - (OW - 8);
        j0 = OW - 8;
    }
    __global const float *r0 = x + (size_t)nc * H * W + (2 * i) * W + 2 * j0;
    __global const float *r1 = r0 + W;
    const size_t o = (size_t)nc * OH * OW + i * OW + j0;
    float8 best;
    int8 at;
    if (j0 + 8 <= OW) {
        max8(vload16(0, r0), vload16(0, r1), &best, &at);
        if (own == 0) {
            vstore8(best, 0, y + o);
            vstore8(at, 0, arg + o);
            return;
        }
    } else {                         /* a row of fewer than 8 windows: its columns, then 0 */
        float ta[16], tb[16];
        const int nv = 2 * (OW - j0);
        for (int e = 0; e < 16; ++e) {
            ta[e] = e < nv ? r0[e] : 0.0f;
            tb[e] = e < nv ? r1[e] : 0.0f;
        }
        max8(vload16(0, ta), vload16(0, tb), &best, &at);
    }
    float tv[8];
    int ti[8];
    vstore8(best, 0, tv);
    vstore8(at, 0, ti);
    for (int e = own; e < 8 && j0 + e < OW; ++e) {
        y[o + e] = tv[e];
        arg[o + e] = ti[e];
    }
}

/* Backward of maxpool2x2_fwd: each work-item writes the 2 x 16 input cells of 8 windows, dy
 * where the window's argument points and 0 elsewhere (0 + dy, as the gather sum: -0 -> +0);
 * an odd last row / column of the input (no window) gets 0. A row's last, short block (in a
 * row of at least 8 windows and an even width) computes the row's last 8 windows as vectors
 * and stores its own columns of them, as the forward does. global = (ceil(W/16), ceil(H/2),
 * N*C). */
inline void spread8(__global const float *dy, __global const int *arg, float16 *r0, float16 *r1)
{
    const float8 g = 0.0f + vload8(0, dy);
    const int8 at = vload8(0, arg);
    const float8 z = (float8)(0.0f);
    const float8 a0 = select(z, g, at == 0), a1 = select(z, g, at == 1);
    const float8 b0 = select(z, g, at == 2), b1 = select(z, g, at == 3);
    *r0 = (float16)(a0.s0, a1.s0, a0.s1, a1.s1, a0.s2, a1.s2, a0.s3, a1.s3,
                    a0.s4, a1.s4, a0.s5, a1.s5, a0.s6, a1.s6, a0.s7, a1.s7);
    *r1 = (float16)(b0.s0, b1.s0, b0.s1, b1.s1, b0.s2, b1.s2, b0.s3, b1.s3,
                    b0.s4, b1.s4, b0.s5, b1.s5, b0.s6, b1.s6, b0.s7, b1.s7);
}

__kernel void maxpool2x2_bwd(__global const float *dy, __global const int *arg,
                             __global float *dx, const int H, const int W, const int OH,
                             const int OW)
{
    const int j0 = get_global_id(0) * 8, i = get_global_id(1), nc = get_global_id(2);
    if (2 * j0 >= W || 2 * i >= H)
        return;
    __global float *r0 = dx + (size_t)nc * H * W + (2 * i) * W + 2 * j0;
    __global float *r1 = r0 + W;
    const size_t o = (size_t)nc * OH * OW + i * OW + j0;
    float16 v0, v1;
    if (i < OH && j0 + 8 <= OW) {
        spread8(dy + o, arg + o, &v0, &v1);
        vstore16(v0, 0, r0);
        vstore16(v1, 0, r1);
        return;
    }
    if (i < OH && OW >= 8 && W == 2 * OW) {
        const int back = j0 - (OW - 8);           /* windows the block shifts back by */
        spread8(dy + o - back, arg + o - back, &v0, &v1);
        float t0[16], t1[16];
        vstore16(v0, 0, t0);
        vstore16(v1, 0, t1);
        for (int q = 2 * back; q < 16; ++q) {
            r0[q - 2 * back] = t0[q];
            r1[q - 2 * back] = t1[q];
        }
        return;
    }
    const int cols = min(16, W - 2 * j0);
    for (int q = 0; q < cols; ++q) {
        const int j = j0 + q / 2;
        const int inside = i < OH && j < OW;
        const int at = inside ? arg[o + q / 2] : -1;
        const float g = inside ? 0.0f + dy[o + q / 2] : 0.0f;
        r0[q] = at == (q & 1) ? g : 0.0f;
        if (2 * i + 1 < H)
            r1[q] = at == 2 + (q & 1) ? g : 0.0f;
    }
}
