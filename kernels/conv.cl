/* conv.cl -- 2-D convolution (NCHW, float32): forward, dx and dw.
 *
 * Conventions (see nbcnn/backends/base.py):
 *   y[n,o,i,j] = b[o] + sum_{c,p,q} w[o,c,p,q] * xpad[n,c,i*SH+p, j*SW+q]
 *   xpad is x zero-padded by PT rows on top and PL columns on the left (bottom/right padding
 *   only shows up through OH, OW).
 *
 * Blocking: every work-item computes a small block of outputs so that each value it loads is
 * used several times from registers:
 *   forward  : OB output channels x 4 neighbouring output columns (one float4 per channel)
 *   dx       : OB input channels  x 4 neighbouring input columns (gather: each dx element sums
 *              over the outputs that read it, so there are no write races and no atomics)
 *   dw       : OB output channels for one (c, p, q) tap, reducing over images and pixels with
 *              float4 partial sums; images can be split into S chunks (partial sums, summed by
 *              reduce.cl) so that small layers still have enough work-items.
 * Remainders (channels not a multiple of OB, widths not a multiple of 4) are handled by
 * clamping weight reads and masking stores.
 *
 * Sizes are kernel arguments (one compiled program serves every layer shape); the blocking
 * factor OB is a compile-time #define (default 8) chosen by the host.
 */

#ifndef OB
#define OB 8
#endif

/* Loads xr[iw + t*SW] for t = 0..3, zero where the column falls in the padding. */
inline float4 load4_cols(__global const float *xr, int iw, int SW, int W)
{
    if (iw >= 0 && iw + 3 * SW < W) {
        if (SW == 1)
            return vload4(0, xr + iw);
        return (float4)(xr[iw], xr[iw + SW], xr[iw + 2 * SW], xr[iw + 3 * SW]);
    }
    float4 v;
    int c0 = iw, c1 = iw + SW, c2 = iw + 2 * SW, c3 = iw + 3 * SW;
    v.s0 = (c0 >= 0 && c0 < W) ? xr[c0] : 0.0f;
    v.s1 = (c1 >= 0 && c1 < W) ? xr[c1] : 0.0f;
    v.s2 = (c2 >= 0 && c2 < W) ? xr[c2] : 0.0f;
    v.s3 = (c3 >= 0 && c3 < W) ? xr[c3] : 0.0f;
    return v;
}

/* Forward.  global = (OH * ceil(OW/4), ceil(O/OB), N).
 * Work-item (g0, g1, n) computes y[n, g1*OB .. g1*OB+OB-1, i, j0 .. j0+3] with
 * i = g0 / ceil(OW/4), j0 = 4 * (g0 % ceil(OW/4)). */
__kernel void conv2d_fwd(__global const float *x, __global const float *w,
                         __global const float *b, const int has_bias,
                         __global float *y,
                         const int C, const int H, const int W,
                         const int O, const int OH, const int OW,
                         const int KH, const int KW, const int SH, const int SW,
                         const int PT, const int PL)
{
    const int nbx = (OW + 3) >> 2;
    const int g0 = get_global_id(0);
    const int o0 = get_global_id(1) * OB;
    const int n = get_global_id(2);
    if (g0 >= OH * nbx || o0 >= O)
        return;
    const int i = g0 / nbx;
    const int j0 = (g0 - i * nbx) * 4;
    const int KK = KH * KW;
    const int CKK = C * KK;

    /* weight row of each output channel in the block (clamped for the last, partial block) */
    __global const float *wo[OB];
#pragma unroll
    for (int k = 0; k < OB; ++k)
        wo[k] = w + (size_t)min(o0 + k, O - 1) * CKK;

    float4 acc[OB];
#pragma unroll
    for (int k = 0; k < OB; ++k)
        acc[k] = (float4)(0.0f);

    const int ih0 = i * SH - PT;
    const int iw0 = j0 * SW - PL;
    const int p_lo = max(0, -ih0), p_hi = min(KH, H - ih0);   /* rows inside the image */
    __global const float *xn = x + (size_t)n * C * H * W;

    for (int c = 0; c < C; ++c) {
        __global const float *xc = xn + (size_t)c * H * W;
        const int cw = c * KK;
        for (int p = p_lo; p < p_hi; ++p) {
            __global const float *xr = xc + (ih0 + p) * W;
            const int pw = cw + p * KW;
            for (int q = 0; q < KW; ++q) {
                const float4 xv = load4_cols(xr, iw0 + q, SW, W);
#pragma unroll
                for (int k = 0; k < OB; ++k)
                    acc[k] = mad((float4)(wo[k][pw + q]), xv, acc[k]);
            }
        }
    }

    const int plane = OH * OW;
    __global float *yr = y + ((size_t)n * O * plane) + i * OW + j0;
#pragma unroll
    for (int k = 0; k < OB; ++k) {
        const int o = o0 + k;
        if (o < O) {
            float4 v = acc[k];
            if (has_bias)
                v += (float4)(b[o]);
            __global float *dst = yr + (size_t)o * plane;
            if (j0 + 3 < OW) {
                vstore4(v, 0, dst);
            } else {
                dst[0] = v.s0;
                if (j0 + 1 < OW) dst[1] = v.s1;
                if (j0 + 2 < OW) dst[2] = v.s2;
            }
        }
    }
}

/* Gradient with respect to the input (gather form).
 * dx[n,c,h,x] = sum_{o,p,q} dy[n,o,i,j] * w[o,c,p,q]  over i*SH = h+PT-p, j*SW = x+PL-q
 * global = (H * ceil(W/4), ceil(C/OB), N); each work-item computes OB channels x 4 columns. */
__kernel void conv2d_bwd_dx(__global const float *dy, __global const float *w,
                            __global float *dx,
                            const int C, const int H, const int W,
                            const int O, const int OH, const int OW,
                            const int KH, const int KW, const int SH, const int SW,
                            const int PT, const int PL)
{
    const int nbx = (W + 3) >> 2;
    const int g0 = get_global_id(0);
    const int c0 = get_global_id(1) * OB;
    const int n = get_global_id(2);
    if (g0 >= H * nbx || c0 >= C)
        return;
    const int h = g0 / nbx;
    const int x0 = (g0 - h * nbx) * 4;
    const int KK = KH * KW;
    const int CKK = C * KK;

    int woff[OB];
#pragma unroll
    for (int k = 0; k < OB; ++k)
        woff[k] = min(c0 + k, C - 1) * KK;

    float4 acc[OB];
#pragma unroll
    for (int k = 0; k < OB; ++k)
        acc[k] = (float4)(0.0f);

    const int plane = OH * OW;
    __global const float *dyn = dy + (size_t)n * O * plane;

    for (int p = 0; p < KH; ++p) {
        const int ii = h + PT - p;                /* = i * SH for the output row that reads h */
        if (ii < 0 || ii % SH != 0)
            continue;
        const int i = ii / SH;
        if (i >= OH)
            continue;
        for (int q = 0; q < KW; ++q) {
            const int jj = x0 + PL - q;           /* = j * SW for column x0 (+t for x0+t) */
            /* which of the 4 columns are read by a real output column, and which column */
            int j[4];
            int ok[4];
#pragma unroll
            for (int t = 0; t < 4; ++t) {
                const int a = jj + t;
                ok[t] = (a >= 0) && (a % SW == 0) && (a / SW < OW) && (x0 + t < W);
                j[t] = ok[t] ? a / SW : 0;
            }
            if (!(ok[0] | ok[1] | ok[2] | ok[3]))
                continue;
            const int all4 = SW == 1 && ok[0] && ok[3];
            const int pq = p * KW + q;
            __global const float *dyr = dyn + i * OW;
            for (int o = 0; o < O; ++o) {
                __global const float *d = dyr + (size_t)o * plane;
                float4 dv;
                if (all4) {
                    dv = vload4(0, d + j[0]);
                } else {
                    dv.s0 = ok[0] ? d[j[0]] : 0.0f;
                    dv.s1 = ok[1] ? d[j[1]] : 0.0f;
                    dv.s2 = ok[2] ? d[j[2]] : 0.0f;
                    dv.s3 = ok[3] ? d[j[3]] : 0.0f;
                }
                __global const float *wr = w + (size_t)o * CKK + pq;
#pragma unroll
                for (int k = 0; k < OB; ++k)
                    acc[k] = mad((float4)(wr[woff[k]]), dv, acc[k]);
            }
        }
    }

    __global float *xr = dx + (size_t)n * C * H * W + h * W + x0;
#pragma unroll
    for (int k = 0; k < OB; ++k) {
        const int c = c0 + k;
        if (c < C) {
            __global float *dst = xr + (size_t)c * H * W;
            const float4 v = acc[k];
            if (x0 + 3 < W) {
                vstore4(v, 0, dst);
            } else {
                dst[0] = v.s0;
                if (x0 + 1 < W) dst[1] = v.s1;
                if (x0 + 2 < W) dst[2] = v.s2;
            }
        }
    }
}

/* Gradient with respect to the weights.
 * dw[o,c,p,q] = sum_{n,i,j} dy[n,o,i,j] * xpad[n,c,i*SH+p,j*SW+q]
 * global = (C*KH*KW, ceil(O/OB), S): work-item (tap, ob, s) reduces over images
 * n = s*NPER .. min(N, (s+1)*NPER)-1 and writes part[s, o, c, p, q]  (S == 1: part is dw). */
__kernel void conv2d_bwd_dw(__global const float *x, __global const float *dy,
                            __global float *part,
                            const int N, const int NPER,
                            const int C, const int H, const int W,
                            const int O, const int OH, const int OW,
                            const int KH, const int KW, const int SH, const int SW,
                            const int PT, const int PL)
{
    const int tap = get_global_id(0);            /* c*KK + p*KW + q */
    const int o0 = get_global_id(1) * OB;
    const int s = get_global_id(2);
    const int KK = KH * KW;
    if (tap >= C * KK || o0 >= O)
        return;
    const int c = tap / KK;
    const int pq = tap - c * KK;
    const int p = pq / KW;
    const int q = pq - p * KW;

    /* output rows/cols whose tap (p, q) lands inside the image */
    const int i_lo = max(0, (PT - p + SH - 1) / SH);
    const int ri = H - 1 + PT - p, rj = W - 1 + PL - q;     /* floor division needs ri >= 0 */
    const int i_hi = ri < 0 ? 0 : min(OH, ri / SH + 1);
    const int j_lo = max(0, (PL - q + SW - 1) / SW);
    const int j_hi = rj < 0 ? 0 : min(OW, rj / SW + 1);

    int dyoff[OB];
#pragma unroll
    for (int k = 0; k < OB; ++k)
        dyoff[k] = min(o0 + k, O - 1) * OH * OW;

    float4 acc4[OB];
    float acc1[OB];
#pragma unroll
    for (int k = 0; k < OB; ++k) {
        acc4[k] = (float4)(0.0f);
        acc1[k] = 0.0f;
    }

    const int n_lo = s * NPER;
    const int n_hi = min(N, n_lo + NPER);
    for (int n = n_lo; n < n_hi; ++n) {
        __global const float *xc = x + ((size_t)n * C + c) * H * W;
        __global const float *dyn = dy + (size_t)n * O * OH * OW;
        for (int i = i_lo; i < i_hi; ++i) {
            __global const float *xr = xc + (i * SH + p - PT) * W + q - PL;
            __global const float *dr = dyn + i * OW;
            int j = j_lo;
            for (; j + 3 < j_hi; j += 4) {
                float4 xv;
                if (SW == 1)
                    xv = vload4(0, xr + j);
                else
                    xv = (float4)(xr[j * SW], xr[(j + 1) * SW], xr[(j + 2) * SW], xr[(j + 3) * SW]);
#pragma unroll
                for (int k = 0; k < OB; ++k)
                    acc4[k] = mad(vload4(0, dr + dyoff[k] + j), xv, acc4[k]);
            }
            for (; j < j_hi; ++j) {
                const float xv = xr[j * SW];
#pragma unroll
                for (int k = 0; k < OB; ++k)
                    acc1[k] = mad(dr[dyoff[k] + j], xv, acc1[k]);
            }
        }
    }

    const int CKK = C * KK;
    __global float *dst = part + (size_t)s * O * CKK;
#pragma unroll
    for (int k = 0; k < OB; ++k) {
        const int o = o0 + k;
        if (o < O) {
            const float4 a = acc4[k];
            dst[(size_t)o * CKK + tap] = (a.s0 + a.s1) + (a.s2 + a.s3) + acc1[k];
        }
    }
}
