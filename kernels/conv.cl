/* conv.cl -- 2-D convolution (NCHW, float32): forward, dx and dw.
 *
 * Conventions (see nbcnn/backends/base.py):
 *   y[n,o,i,j] = b[o] + sum_{c,p,q} w[o,c,p,q] * xpad[n,c,i*SH+p, j*SW+q]
 *   xpad is x zero-padded by PT rows on top and PL columns on the left (bottom/right padding
 *   only shows up through OH, OW).
 *
 * Blocking: every work-item computes a small block of outputs so that each value it loads is
 * used several times from registers:
 *   forward  : OB output channels x PX neighbouring output columns (one floatPX per channel),
 *              weights re-laid out (conv2d_wtrans) so a tap's OB weights are contiguous; on a
 *              zero-padded copy of x (pad2d, conv2d_fwd_padded: no bounds tests, the CPU
 *              default) or testing the image's edges (conv2d_fwd)
 *   dx       : stride 1: the forward kernel on dy with the flipped, transposed kernel;
 *              otherwise one stride phase at a time (conv2d_bwd_dx_phase): OB input channels
 *              x PX positions of a phase row, each the stride-1 correlation of dy with the
 *              taps that reach that phase (no write races, no atomics, no skipped taps)
 *   dw       : on CPUs, VO filters (one vector) x TB taps per work-item on a channels-last
 *              copy of dy and a padded x, the bias gradient alongside (conv2d_bwd_dw_vec);
 *              on GPUs, DOB output channels x QB neighbouring taps (q) of one (c, p), reducing over
 *              images and pixels with DPX-wide vector partial sums; images can be split into S
 *              chunks (partial sums, added by reduce.cl) so small layers still have enough
 *              work-items.
 * Remainders (channels not a multiple of the block, widths not a multiple of the vector) are
 * handled by clamping weight reads, scalar edge loops and masked stores.
 *
 * Sizes are kernel arguments (one compiled program serves every layer shape); the blocking
 * factors OB and PX are compile-time #defines chosen by the host (auto-tuned per device).
 */

#ifndef OB
#define OB 8
#endif

#ifndef PX
#define PX 8
#endif
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define VF CAT(float, PX)             /* PX neighbouring output columns of one channel */
#define VLOAD CAT(vload, PX)
#define VSTORE CAT(vstore, PX)

/* Loads xr[iw + t*SW] for t = 0..PX-1, zero where a column falls in the padding. */
inline VF load_cols(__global const float *xr, int iw, int SW, int W)
{
    float t[PX];
    if (iw >= 0 && iw + (PX - 1) * SW < W) {
        if (SW == 1)
            return VLOAD(0, xr + iw);
        for (int k = 0; k < PX; ++k)
            t[k] = xr[iw + k * SW];
        return VLOAD(0, t);
    }
    for (int k = 0; k < PX; ++k) {
        const int c = iw + k * SW;
        t[k] = (c >= 0 && c < W) ? xr[c] : 0.0f;
    }
    return VLOAD(0, t);
}

/* dst[e] = v[e] for the columns j0 + e < OW of a row (all PX of them but in a row's last block) */
inline void store_row(const VF v, __global float *dst, const int j0, const int OW)
{
    if (j0 + PX - 1 < OW) {
        VSTORE(v, 0, dst);
    } else {
        float t[PX];
        VSTORE(v, 0, t);
        for (int e = 0; e < PX && j0 + e < OW; ++e)
            dst[e] = t[e];
    }
}

/* The forward kernels' epilogue: y[n, o0 + k, i, j0 + e] = acc[k][e] (+ b[o0 + k]) for the
 * filters o0 + k < O and the columns j0 + e < OW (a row's last block stores what is left). */
inline void store_tile(const VF *acc, __global const float *b, const int has_bias,
                       __global float *y, const int n, const int o0, const int i, const int j0,
                       const int O, const int OH, const int OW)
{
    const int plane = OH * OW;
    __global float *yr = y + ((size_t)n * O * plane) + i * OW + j0;
#pragma unroll
    for (int k = 0; k < OB; ++k) {
        const int o = o0 + k;
        if (o < O) {
            VF v = acc[k];
            if (has_bias)
                v += (VF)(b[o]);
            store_row(v, yr + (size_t)o * plane, j0, OW);
        }
    }
}

/* Weight re-layout for conv2d_fwd: wt[(c*KH + p)*KW + q][o] (rows of OP >= O, zero padded), so
 * the OB weights a work-item needs for one tap are contiguous.
 * flip == 0: wt[(c,p,q)][o] = w[o, c, p, q]               (w is (O, C, KH, KW))
 * flip == 1: wt[(c,p,q)][o] = w[c, o, KH-1-p, KW-1-q]     (w is (C, O, KH, KW): the stride-1
 *            input gradient is the forward convolution of dy with this flipped kernel)
 * global = (OP, C*KH*KW) with O, C the output/input channels of the convolution computed. */
__kernel void conv2d_wtrans(__global const float *w, __global float *wt, const int O,
                            const int C, const int KH, const int KW, const int OP, const int flip)
{
    const int o = get_global_id(0), r = get_global_id(1);
    const int KK = KH * KW;
    if (o >= OP || r >= C * KK)
        return;
    float v = 0.0f;
    if (o < O) {
        const int c = r / KK, pq = r - c * KK;
        v = flip ? w[((size_t)c * O + o) * KK + (KK - 1 - pq)] : w[((size_t)o * C + c) * KK + pq];
    }
    wt[(size_t)r * OP + o] = v;
}

/* Forward.  global = (OH * ceil(OW/PX), ceil(O/OB), N).
 * Work-item (g0, g1, n) computes y[n, g1*OB .. g1*OB+OB-1, i, j0 .. j0+PX-1] with
 * i = g0 / ceil(OW/PX), j0 = PX * (g0 % ceil(OW/PX)): OB vector accumulators of PX columns.
 * Per tap it loads one vector of inputs and OB broadcast weights, then does OB vector
 * multiply-adds. Blocks whose columns are all inside the image (and stride 1) take a loop
 * without any bounds test. wt is the re-laid-out weight (conv2d_wtrans). */
__kernel void conv2d_fwd(__global const float *x, __global const float *wt,
                         __global const float *b, const int has_bias,
                         __global float *y,
                         const int C, const int H, const int W,
                         const int O, const int OH, const int OW,
                         const int KH, const int KW, const int SH, const int SW,
                         const int PT, const int PL, const int OP)
{
    const int nbx = (OW + PX - 1) / PX;
    const int g0 = get_global_id(0);
    const int o0 = get_global_id(1) * OB;
    const int n = get_global_id(2);
    if (g0 >= OH * nbx || o0 >= O)
        return;
    const int i = g0 / nbx;
    const int j0 = (g0 - i * nbx) * PX;

    VF acc[OB];
#pragma unroll
    for (int k = 0; k < OB; ++k)
        acc[k] = (VF)(0.0f);

    const int ih0 = i * SH - PT;
    const int iw0 = j0 * SW - PL;
    const int p_lo = max(0, -ih0), p_hi = min(KH, H - ih0);   /* rows inside the image */
    __global const float *xn = x + (size_t)n * C * H * W;
    const int interior = SW == 1 && iw0 >= 0 && iw0 + PX - 1 + KW - 1 < W;

    if (interior) {
        for (int c = 0; c < C; ++c) {
            __global const float *xc = xn + (size_t)c * H * W + iw0;
            for (int p = p_lo; p < p_hi; ++p) {
                __global const float *xr = xc + (ih0 + p) * W;
                __global const float *wr = wt + ((c * KH + p) * KW) * OP + o0;
                for (int q = 0; q < KW; ++q) {
                    const VF xv = VLOAD(0, xr + q);
                    __global const float *wq = wr + q * OP;
#pragma unroll
                    for (int k = 0; k < OB; ++k)
                        acc[k] = mad((VF)(wq[k]), xv, acc[k]);
                }
            }
        }
    } else {
        for (int c = 0; c < C; ++c) {
            __global const float *xc = xn + (size_t)c * H * W;
            for (int p = p_lo; p < p_hi; ++p) {
                __global const float *xr = xc + (ih0 + p) * W;
                __global const float *wr = wt + ((c * KH + p) * KW) * OP + o0;
                for (int q = 0; q < KW; ++q) {
                    const VF xv = load_cols(xr, iw0 + q, SW, W);
                    __global const float *wq = wr + q * OP;
#pragma unroll
                    for (int k = 0; k < OB; ++k)
                        acc[k] = mad((VF)(wq[k]), xv, acc[k]);
                }
            }
        }
    }

    store_tile(acc, b, has_bias, y, n, o0, i, j0, O, OH, OW);
}

/* Gradient with respect to the weights.
 * dw[o,c,p,q] = sum_{n,i,j} dy[n,o,i,j] * xpad[n,c,i*SH+p,j*SW+q]
 * global = (C*KH*ceil(KW/QB), ceil(O/DOB), S).  Work-item (g, ob, s) computes DOB output
 * channels x QB neighbouring taps q0..q0+QB-1 of one (c, p): DOB*QB vector accumulators over
 * DPX neighbouring output columns (per step: DOB vectors of dy, QB vectors of x, DOB*QB
 * multiply-adds), reducing over images n = s*NPER .. min(N, (s+1)*NPER)-1 and every output
 * pixel whose tap lands inside the image; it writes part[s, o, c, p, q] (S == 1: part is dw).
 * The columns valid for all QB taps run vectorised; the few left at the edges run scalar. */
#ifndef DOB
#define DOB 4
#endif
#ifndef QB
#define QB 3
#endif
#ifndef DPX
#define DPX 4
#endif
#define DVF CAT(float, DPX)
#define DVLOAD CAT(vload, DPX)

__kernel void conv2d_bwd_dw(__global const float *x, __global const float *dy,
                            __global float *part,
                            const int N, const int NPER,
                            const int C, const int H, const int W,
                            const int O, const int OH, const int OW,
                            const int KH, const int KW, const int SH, const int SW,
                            const int PT, const int PL)
{
    const int nqb = (KW + QB - 1) / QB;
    const int g = get_global_id(0);
    const int o0 = get_global_id(1) * DOB;
    const int s = get_global_id(2);
    if (g >= C * KH * nqb || o0 >= O)
        return;
    const int c = g / (KH * nqb);
    const int r = g - c * KH * nqb;
    const int p = r / nqb;
    const int q0 = (r - p * nqb) * QB;

    /* output rows whose tap row p lands inside the image (floor division needs ri >= 0) */
    const int i_lo = max(0, (PT - p + SH - 1) / SH);
    const int ri = H - 1 + PT - p;
    const int i_hi = ri < 0 ? 0 : min(OH, ri / SH + 1);
    /* output columns per tap q0+t; taps past KW get an empty range */
    int jlo[QB], jhi[QB];
#pragma unroll
    for (int t = 0; t < QB; ++t) {
        const int q = q0 + t;
        const int rj = W - 1 + PL - q;
        jlo[t] = max(0, (PL - q + SW - 1) / SW);
        jhi[t] = (q < KW && rj >= 0) ? min(OW, rj / SW + 1) : 0;
    }
    /* columns valid for every real tap: [jc_lo, jc_hi) (jlo falls and jhi falls as q grows) */
    const int tl = min(QB, KW - q0) - 1;
    const int jc_lo = jlo[0];
    int jc_hi = jhi[0];
#pragma unroll
    for (int t = 1; t < QB; ++t)
        if (t <= tl) jc_hi = min(jc_hi, jhi[t]);
    const int nvec = jc_hi > jc_lo ? (jc_hi - jc_lo) / DPX : 0;
    const int jv_end = jc_lo + nvec * DPX;

    int dyoff[DOB];
#pragma unroll
    for (int k = 0; k < DOB; ++k)
        dyoff[k] = min(o0 + k, O - 1) * OH * OW;

    DVF accv[DOB][QB];
    float accs[DOB][QB];
#pragma unroll
    for (int k = 0; k < DOB; ++k)
#pragma unroll
        for (int t = 0; t < QB; ++t) {
            accv[k][t] = (DVF)(0.0f);
            accs[k][t] = 0.0f;
        }

    const int n_lo = s * NPER;
    const int n_hi = min(N, n_lo + NPER);
    for (int n = n_lo; n < n_hi; ++n) {
        __global const float *xc = x + ((size_t)n * C + c) * H * W;
        __global const float *dyn = dy + (size_t)n * O * OH * OW;
        for (int i = i_lo; i < i_hi; ++i) {
            /* xr[j*SW + t] is the input under output column j for tap q0+t */
            __global const float *xr = xc + (i * SH + p - PT) * W + q0 - PL;
            __global const float *dr = dyn + i * OW;
            for (int j = jc_lo; j < jv_end; j += DPX) {
                DVF xv[QB];
#pragma unroll
                for (int t = 0; t < QB; ++t) {
                    if (SW == 1) {
                        xv[t] = DVLOAD(0, xr + j + t);
                    } else {
                        float tmp[DPX];
                        for (int e = 0; e < DPX; ++e)
                            tmp[e] = xr[(j + e) * SW + t];
                        xv[t] = DVLOAD(0, tmp);
                    }
                }
#pragma unroll
                for (int k = 0; k < DOB; ++k) {
                    const DVF dv = DVLOAD(0, dr + dyoff[k] + j);
#pragma unroll
                    for (int t = 0; t < QB; ++t)
                        accv[k][t] = mad(dv, xv[t], accv[k][t]);
                }
            }
            /* edges: columns valid for tap t but outside the vectorised range */
#pragma unroll
            for (int t = 0; t < QB; ++t) {
                const int e1 = min(jc_lo, jhi[t]);
                for (int j = jlo[t]; j < e1; ++j) {
                    const float xv = xr[j * SW + t];
#pragma unroll
                    for (int k = 0; k < DOB; ++k)
                        accs[k][t] = mad(dr[dyoff[k] + j], xv, accs[k][t]);
                }
                for (int j = max(jv_end, jlo[t]); j < jhi[t]; ++j) {
                    const float xv = xr[j * SW + t];
#pragma unroll
                    for (int k = 0; k < DOB; ++k)
                        accs[k][t] = mad(dr[dyoff[k] + j], xv, accs[k][t]);
                }
            }
        }
    }

    const int KK = KH * KW;
    const int CKK = C * KK;
    __global float *dst = part + (size_t)s * O * CKK + c * KK + p * KW + q0;
#pragma unroll
    for (int k = 0; k < DOB; ++k) {
        const int o = o0 + k;
        if (o >= O)
            continue;
#pragma unroll
        for (int t = 0; t < QB; ++t) {
            if (q0 + t < KW) {
                float v[DPX];
                CAT(vstore, DPX)(accv[k][t], 0, v);
                float sum = accs[k][t];
                for (int e = 0; e < DPX; ++e)
                    sum += v[e];
                dst[(size_t)o * CKK + t] = sum;
            }
        }
    }
}

/* ---- grouped, dilated and depthwise convolution ---------------------------------------------
 *
 *   y[n,o,i,j] = b[o] + sum_{c<Cg,p,q} w[o,c,p,q] * xpad[n, g*Cg+c, i*SH+p*DH, j*SW+q*DW]
 *
 * with G groups, Cg = C/G input channels and Og = O/G filters per group, g = o / Og; w is
 * (O, Cg, KH, KW). The plain convolution (G = 1, no dilation) runs the kernels above.
 *   forward : OB filters of one group x PX neighbouring output columns per work-item (as
 *             conv2d_fwd), weights re-laid out per group by conv2d_grouped_wtrans
 *   depthwise forward (G = C): one filter x PX columns per work-item, a sliding window over its
 *             one channel (no reuse to block for)
 *   dx      : stride 1 (not depthwise): the grouped forward on dy with the flipped kernel;
 *             otherwise gather, one element per work-item, summing over its group's filters
 *   dw      : one weight per work-item, reducing over images (optionally split into S chunks
 *             of partial sums, added by reduce.cl) and the output pixels whose tap is inside */

/* wt[(g*C*KH*KW + (c*KH + p)*KW + q)*OP + o] for the convolution computed, with O filters and
 * C input channels per group (rows of OP >= O, zero padded). global = (OP, C*KH*KW, G).
 * flip == 0: = w[g*O + o, c, p, q]                    (w is (G*O, C, KH, KW))
 * flip == 1: = w[g*C + c, o, KH-1-p, KW-1-q]          (w is (G*C, O, KH, KW): the stride-1
 *            input gradient, dy convolved group by group with the flipped kernel) */
__kernel void conv2d_grouped_wtrans(__global const float *w, __global float *wt, const int O,
                                    const int C, const int KH, const int KW, const int OP,
                                    const int flip)
{
    const int o = get_global_id(0), r = get_global_id(1), g = get_global_id(2);
    const int KK = KH * KW;
    if (o >= OP || r >= C * KK)
        return;
    float v = 0.0f;
    if (o < O) {
        const int c = r / KK, pq = r - c * KK;
        v = flip ? w[(((size_t)g * C + c) * O + o) * KK + (KK - 1 - pq)]
                 : w[(((size_t)g * O + o) * C + c) * KK + pq];
    }
    wt[((size_t)g * C * KK + r) * OP + o] = v;
}

/* Grouped forward.  global = (OH * ceil(OW/PX), G * OP/OB, N), OP = Og rounded up to OB.
 * Work-item (g0, g1, n) computes y[n, g*Og + o0 .. +OB-1, i, j0 .. j0+PX-1] for group
 * g = g1 / (OP/OB), o0 = OB * (g1 % (OP/OB)). wt from conv2d_grouped_wtrans. */
__kernel void conv2d_grouped_fwd(__global const float *x, __global const float *wt,
                                 __global const float *b, const int has_bias,
                                 __global float *y,
                                 const int C, const int H, const int W,
                                 const int O, const int OH, const int OW,
                                 const int KH, const int KW, const int SH, const int SW,
                                 const int PT, const int PL, const int DH, const int DW,
                                 const int G, const int OP)
{
    const int nbx = (OW + PX - 1) / PX;
    const int nob = OP / OB;
    const int g0 = get_global_id(0);
    const int grp = get_global_id(1) / nob;
    const int o0 = (get_global_id(1) - grp * nob) * OB;
    const int n = get_global_id(2);
    const int Cg = C / G, Og = O / G;
    if (g0 >= OH * nbx || grp >= G)
        return;
    const int i = g0 / nbx;
    const int j0 = (g0 - i * nbx) * PX;

    VF acc[OB];
#pragma unroll
    for (int k = 0; k < OB; ++k)
        acc[k] = (VF)(0.0f);

    const int ih0 = i * SH - PT;
    const int iw0 = j0 * SW - PL;
    __global const float *xg = x + ((size_t)n * C + (size_t)grp * Cg) * H * W;
    __global const float *wg = wt + (size_t)grp * Cg * KH * KW * OP + o0;
    for (int c = 0; c < Cg; ++c) {
        __global const float *xc = xg + (size_t)c * H * W;
        for (int p = 0; p < KH; ++p) {
            const int ih = ih0 + p * DH;
            if (ih < 0 || ih >= H)
                continue;
            __global const float *xr = xc + ih * W;
            __global const float *wr = wg + ((c * KH + p) * KW) * OP;
            for (int q = 0; q < KW; ++q) {
                const VF xv = load_cols(xr, iw0 + q * DW, SW, W);
                __global const float *wq = wr + q * OP;
#pragma unroll
                for (int k = 0; k < OB; ++k)
                    acc[k] = mad((VF)(wq[k]), xv, acc[k]);
            }
        }
    }

    const int plane = OH * OW;
    __global float *yr = y + ((size_t)n * O + (size_t)grp * Og) * plane + i * OW + j0;
#pragma unroll
    for (int k = 0; k < OB; ++k) {
        const int o = o0 + k;
        if (o < Og) {
            VF v = acc[k];
            if (has_bias)
                v += (VF)(b[grp * Og + o]);
            store_row(v, yr + (size_t)o * plane, j0, OW);
        }
    }
}

/* Depthwise forward (G = C, O = m*C: filter o reads channel o / m).
 * global = (OH * ceil(OW/PX), O, N); work-item (g0, o, n) computes y[n, o, i, j0 .. j0+PX-1]. */
__kernel void conv2d_depthwise_fwd(__global const float *x, __global const float *w,
                                   __global const float *b, const int has_bias,
                                   __global float *y,
                                   const int C, const int H, const int W,
                                   const int O, const int OH, const int OW,
                                   const int KH, const int KW, const int SH, const int SW,
                                   const int PT, const int PL, const int DH, const int DW)
{
    const int nbx = (OW + PX - 1) / PX;
    const int g0 = get_global_id(0);
    const int o = get_global_id(1);
    const int n = get_global_id(2);
    if (g0 >= OH * nbx || o >= O)
        return;
    const int i = g0 / nbx;
    const int j0 = (g0 - i * nbx) * PX;
    const int c = o / (O / C);
    const int ih0 = i * SH - PT;
    const int iw0 = j0 * SW - PL;
    __global const float *xc = x + ((size_t)n * C + c) * H * W;
    __global const float *wo = w + (size_t)o * KH * KW;
    VF acc = (VF)(has_bias ? b[o] : 0.0f);
    for (int p = 0; p < KH; ++p) {
        const int ih = ih0 + p * DH;
        if (ih < 0 || ih >= H)
            continue;
        __global const float *xr = xc + ih * W;
        for (int q = 0; q < KW; ++q)
            acc = mad((VF)(wo[p * KW + q]), load_cols(xr, iw0 + q * DW, SW, W), acc);
    }
    store_row(acc, y + ((size_t)n * O + o) * OH * OW + i * OW + j0, j0, OW);
}

/* Grouped / depthwise gradient with respect to the input (gather form).
 * dx[n,c,h,x] = sum_{o in c's group, p, q} dy[n,o,i,j] * w[o, c - g*Cg, p, q]
 *               over i*SH = h+PT-p*DH, j*SW = x+PL-q*DW
 * global = (H*W, C, N), one element per work-item. */
__kernel void conv2d_grouped_bwd_dx(__global const float *dy, __global const float *w,
                                    __global float *dx,
                                    const int C, const int H, const int W,
                                    const int O, const int OH, const int OW,
                                    const int KH, const int KW, const int SH, const int SW,
                                    const int PT, const int PL, const int DH, const int DW,
                                    const int G)
{
    const int e = get_global_id(0), c = get_global_id(1), n = get_global_id(2);
    if (e >= H * W || c >= C)
        return;
    const int h = e / W, xc = e - h * W;
    const int Cg = C / G, Og = O / G;
    const int grp = c / Cg, cl = c - grp * Cg;
    const int KK = KH * KW;
    __global const float *dyg = dy + ((size_t)n * O + (size_t)grp * Og) * OH * OW;
    __global const float *wg = w + ((size_t)grp * Og * Cg + cl) * KK;
    float acc = 0.0f;
    for (int p = 0; p < KH; ++p) {
        const int ii = h + PT - p * DH;
        if (ii < 0 || ii % SH != 0 || ii / SH >= OH)
            continue;
        const int i = ii / SH;
        for (int q = 0; q < KW; ++q) {
            const int jj = xc + PL - q * DW;
            if (jj < 0 || jj % SW != 0 || jj / SW >= OW)
                continue;
            const int j = jj / SW;
            __global const float *d = dyg + i * OW + j;
            __global const float *wq = wg + p * KW + q;
            for (int o = 0; o < Og; ++o)
                acc = mad(d[(size_t)o * OH * OW], wq[(size_t)o * Cg * KK], acc);
        }
    }
    dx[((size_t)n * C + c) * H * W + e] = acc;
}

/* Grouped / depthwise gradient with respect to the weights.
 * dw[o,c,p,q] = sum_{n,i,j} dy[n,o,i,j] * xpad[n, g*Cg+c, i*SH+p*DH, j*SW+q*DW]
 * global = (Cg*KH*KW, O, S); work-item (r, o, s) computes one weight (r = (c*KH + p)*KW + q)
 * over images n = s*NPER .. min(N, (s+1)*NPER)-1 into part[s, o, r] (S == 1: part is dw). */
__kernel void conv2d_grouped_bwd_dw(__global const float *x, __global const float *dy,
                                    __global float *part,
                                    const int N, const int NPER,
                                    const int C, const int H, const int W,
                                    const int O, const int OH, const int OW,
                                    const int KH, const int KW, const int SH, const int SW,
                                    const int PT, const int PL, const int DH, const int DW,
                                    const int G)
{
    const int r = get_global_id(0), o = get_global_id(1), s = get_global_id(2);
    const int Cg = C / G, KK = KH * KW;
    if (r >= Cg * KK || o >= O)
        return;
    const int cl = r / KK, pq = r - cl * KK;
    const int p = pq / KW, q = pq - p * KW;
    const int c = (o / (O / G)) * Cg + cl;
    /* output rows / columns whose tap lands inside the image */
    const int ti = PT - p * DH, ri = H - 1 + PT - p * DH;
    const int i_lo = max(0, (ti + SH - 1) / SH);
    const int i_hi = ri < 0 ? 0 : min(OH, ri / SH + 1);
    const int tj = PL - q * DW, rj = W - 1 + PL - q * DW;
    const int j_lo = max(0, (tj + SW - 1) / SW);
    const int j_hi = rj < 0 ? 0 : min(OW, rj / SW + 1);
    float acc = 0.0f;
    const int n_lo = s * NPER, n_hi = min(N, n_lo + NPER);
    for (int n = n_lo; n < n_hi; ++n) {
        __global const float *xc = x + ((size_t)n * C + c) * H * W;
        __global const float *dyo = dy + ((size_t)n * O + o) * OH * OW;
        for (int i = i_lo; i < i_hi; ++i) {
            __global const float *xr = xc + (i * SH - ti) * W - tj;
            __global const float *dr = dyo + i * OW;
            for (int j = j_lo; j < j_hi; ++j)
                acc = mad(dr[j], xr[j * SW], acc);
        }
    }
    part[((size_t)s * O + o) * Cg * KK + r] = acc;
}

/* ---- weight gradient, vectorised over filters ------------------------------------------------
 *
 *   dw[o,c,p,q] = sum_{n,i,j} dy[n,o,i,j] * xpad[n,c,i*SH+p,j*SW+q],   db[o] = sum dy[n,o,i,j]
 *
 * The form for CPU devices (and any device where wide vectors pay): dy is first laid out
 * channels-last, dyt[n,i,j,o] (nchw_to_nhwc, filters padded to OP, a multiple of VO), and x is
 * zero-padded (pad2d) so that every tap of every output pixel lies inside xp: no bounds test in
 * the inner loop. A work-item holds TB taps of one input channel for VO filters, TB vector
 * accumulators: per output pixel it loads one vector of VO filters' dy and TB scalars of x
 * (broadcast), and does TB vector multiply-adds. Taps past KH*KW in the last block are clamped
 * to the last tap and not stored. */
#ifndef VO
#define VO 16
#endif
#ifndef TB
#define TB 9
#endif
#define OVF CAT(float, VO)
#define OVLOAD CAT(vload, VO)
#define OVSTORE CAT(vstore, VO)

/* dst[n, e, o] = src[n, o, e] for o < O, 0 for O <= o < OP.  global = (OP, HW, N). */
__kernel void nchw_to_nhwc(__global const float *src, __global float *dst, const int O,
                           const int HW, const int OP)
{
    const int o = get_global_id(0), e = get_global_id(1), n = get_global_id(2);
    if (o >= OP || e >= HW)
        return;
    dst[((size_t)n * HW + e) * OP + o] = o < O ? src[((size_t)n * O + o) * HW + e] : 0.0f;
}

/* xp[m, r, s] = x[m, r - PT, s - PL] where that is inside x, else 0; x is (M, H, W), each plane
 * of xp holds HP rows of WP values and is LS >= HP*WP values long (the values past HP*WP are
 * zeros too: the plane kernel's last loads reach into them). One row of xp per work-item (three
 * plain loops: left zeros, the copied row, right zeros; the last row also zeroes the plane's
 * tail), global = (HP, M). */
__kernel void pad2d(__global const float *x, __global float *xp, const int H, const int W,
                    const int HP, const int WP, const int PT, const int PL, const int LS)
{
    const int r = get_global_id(0), m = get_global_id(1);
    if (r >= HP)
        return;
    __global float *dst = xp + (size_t)m * LS + r * WP;
    if (r == HP - 1)
        for (int s = WP; s < LS - r * WP; ++s)
            dst[s] = 0.0f;
    const int h = r - PT;
    if (h < 0 || h >= H) {
        for (int s = 0; s < WP; ++s)
            dst[s] = 0.0f;
        return;
    }
    __global const float *src = x + ((size_t)m * H + h) * W;
    const int lo = min(PL, WP), hi = min(PL + W, WP);
    for (int s = 0; s < lo; ++s)
        dst[s] = 0.0f;
    for (int s = lo; s < hi; ++s)
        dst[s] = src[s - PL];
    for (int s = hi; s < WP; ++s)
        dst[s] = 0.0f;
}

/* off[t] = where tap t0 + t (p, q) of a window sits in a plane of rows of WP values, p*WP + q;
 * taps past the last one (KK) are clamped to it (computed, not stored) */
inline void tap_offsets(int *off, const int t0, const int KK, const int KW, const int WP)
{
#pragma unroll
    for (int t = 0; t < TB; ++t) {
        const int tap = min(t0 + t, KK - 1), p = tap / KW;
        off[t] = p * WP + (tap - p * KW);
    }
}

/* global = (C * ceil(KH*KW/TB), OP/VO, S).  Work-item (g, ob, s) sums over images
 * n = s*NPER .. min(N, (s+1)*NPER)-1 into part[s, o, c, p, q] (S == 1: part is dw) and, for
 * g == 0 when has_bias, the bias gradient's part into dbpart[s, o]. */
__kernel void conv2d_bwd_dw_vec(__global const float *xp, __global const float *dyt,
                                __global float *part, __global float *dbpart,
                                const int has_bias, const int N, const int NPER,
                                const int C, const int HP, const int WP,
                                const int O, const int OH, const int OW,
                                const int KH, const int KW, const int SH, const int SW,
                                const int OP)
{
    const int KK = KH * KW, ntb = (KK + TB - 1) / TB;
    const int g = get_global_id(0), o0 = get_global_id(1) * VO, s = get_global_id(2);
    if (g >= C * ntb || o0 >= OP)
        return;
    const int c = g / ntb, t0 = (g - c * ntb) * TB;
    int off[TB];
    tap_offsets(off, t0, KK, KW, WP);
    OVF acc[TB];
#pragma unroll
    for (int t = 0; t < TB; ++t)
        acc[t] = (OVF)(0.0f);
    OVF bacc = (OVF)(0.0f);
    const int n_lo = s * NPER, n_hi = min(N, n_lo + NPER);
    for (int n = n_lo; n < n_hi; ++n) {
        __global const float *xc = xp + ((size_t)n * C + c) * HP * WP;
        __global const float *dn = dyt + (size_t)n * OH * OW * OP + o0;
        for (int i = 0; i < OH; ++i) {
            __global const float *xr = xc + i * SH * WP;
            __global const float *dr = dn + (size_t)i * OW * OP;
            for (int j = 0; j < OW; ++j) {
                const OVF dv = OVLOAD(0, dr + j * OP);
                __global const float *xq = xr + j * SW;
#pragma unroll
                for (int t = 0; t < TB; ++t)
                    acc[t] = mad((OVF)(xq[off[t]]), dv, acc[t]);
                bacc += dv;
            }
        }
    }
    const int CKK = C * KK;
    __global float *dst = part + (size_t)s * O * CKK + c * KK + t0;
#pragma unroll
    for (int t = 0; t < TB; ++t) {
        if (t0 + t < KK) {
            float v[VO];
            OVSTORE(acc[t], 0, v);
            for (int e = 0; e < VO && o0 + e < O; ++e)
                dst[(size_t)(o0 + e) * CKK + t] = v[e];
        }
    }
    if (has_bias && g == 0) {
        float v[VO];
        OVSTORE(bacc, 0, v);
        for (int e = 0; e < VO && o0 + e < O; ++e)
            dbpart[(size_t)s * O + o0 + e] = v[e];
    }
}

/* Forward on a zero-padded input: the same blocking as conv2d_fwd (OB filters x PX columns per
 * work-item, wt from conv2d_wtrans), but xp (N, C, HP, WP) holds the padding (pad2d), wide
 * enough that every block's PX columns of every tap are inside it: the inner loop has no
 * bounds test and no edge path. Only the store of a row's last block is masked.
 * global = (OH * ceil(OW/PX), OP/OB, N). */
__kernel void conv2d_fwd_padded(__global const float *xp, __global const float *wt,
                                __global const float *b, const int has_bias,
                                __global float *y,
                                const int C, const int HP, const int WP,
                                const int O, const int OH, const int OW,
                                const int KH, const int KW, const int SH, const int SW,
                                const int OP)
{
    const int nbx = (OW + PX - 1) / PX;
    const int g0 = get_global_id(0);
    const int o0 = get_global_id(1) * OB;
    const int n = get_global_id(2);
    if (g0 >= OH * nbx || o0 >= O)
        return;
    const int i = g0 / nbx;
    const int j0 = (g0 - i * nbx) * PX;

    VF acc[OB];
#pragma unroll
    for (int k = 0; k < OB; ++k)
        acc[k] = (VF)(0.0f);

    __global const float *xb = xp + (size_t)n * C * HP * WP + (i * SH) * WP + j0 * SW;
    for (int c = 0; c < C; ++c) {
        __global const float *xc = xb + (size_t)c * HP * WP;
        __global const float *wc = wt + (size_t)c * KH * KW * OP + o0;
        for (int p = 0; p < KH; ++p) {
            __global const float *xr = xc + p * WP;
            __global const float *wr = wc + p * KW * OP;
            for (int q = 0; q < KW; ++q) {
                VF xv;
                if (SW == 1) {
                    xv = VLOAD(0, xr + q);
                } else {
                    float t[PX];
                    for (int e = 0; e < PX; ++e)
                        t[e] = xr[q + e * SW];
                    xv = VLOAD(0, t);
                }
                __global const float *wq = wr + q * OP;
#pragma unroll
                for (int k = 0; k < OB; ++k)
                    acc[k] = mad((VF)(wq[k]), xv, acc[k]);
            }
        }
    }

    store_tile(acc, b, has_bias, y, n, o0, i, j0, O, OH, OW);
}

/* ---- stride-1 forward on flattened planes -----------------------------------------------------
 *
 *   y[n,o,i,j] = b[o] + sum_{c,p,q} wt[(c*KH + p)*KW + q][o] * xf[n, c, (i + p)*WP + j + q]
 *
 * xf holds each input plane inside its zero border, flattened with rows of WP = W + PL + PR
 * values and LS >= HP*WP values per plane (pad2d; the tail past HP*WP is zero). On that grid the
 * window value xpad[n, c, i + p, j + q] sits at m + p*WP + q with m = i*WP + j, so a run of
 * consecutive grid outputs m needs, for one tap, a run of consecutive inputs: one vector load,
 * and one weight for all of them, one broadcast. A work-item computes OB filters x PR vectors of
 * PX consecutive grid outputs (OB*PR vector accumulators: per tap PR loads and OB broadcasts
 * feed OB*PR multiply-adds, and no row edge breaks the runs). The WP - OW gap columns of every
 * row are computed and dropped at the store, the form the Numba backend's plane kernel takes.
 * global = (ceil(((OH - 1)*WP + OW) / (PR*PX)), OP/OB, N). */
#ifndef PR
#define PR 3
#endif

/* y[e] = v[e] for the PX grid outputs m .. m + PX - 1 (row i, column j of the first) that are
 * real outputs (column < OW, row < OH): one vector store when all are in one row, else each. */
inline void store_grid(const VF v, __global float *yo, int i, int j, const int WP,
                       const int OH, const int OW)
{
    if (j + PX <= OW && i < OH) {
        VSTORE(v, 0, yo + i * OW + j);
        return;
    }
    float t[PX];
    VSTORE(v, 0, t);
    for (int e = 0; e < PX; ++e) {
        if (i < OH && j < OW)
            yo[i * OW + j] = t[e];
        if (++j == WP) {
            j = 0;
            ++i;
        }
    }
}

__kernel void conv2d_fwd_plane(__global const float *xf, __global const float *wt,
                               __global const float *b, const int has_bias,
                               __global float *y,
                               const int C, const int LS, const int WP,
                               const int O, const int OH, const int OW,
                               const int KH, const int KW, const int OP)
{
    const int m0 = get_global_id(0) * (PR * PX);
    const int o0 = get_global_id(1) * OB;
    const int n = get_global_id(2);
    if (m0 >= (OH - 1) * WP + OW || o0 >= O)
        return;

    VF acc[OB][PR];
#pragma unroll
    for (int k = 0; k < OB; ++k)
#pragma unroll
        for (int r = 0; r < PR; ++r)
            acc[k][r] = (VF)(0.0f);

    __global const float *xb = xf + (size_t)n * C * LS + m0;
    for (int c = 0; c < C; ++c) {
        __global const float *xc = xb + (size_t)c * LS;
        __global const float *wc = wt + (size_t)c * KH * KW * OP + o0;
        for (int p = 0; p < KH; ++p) {
            __global const float *xr = xc + p * WP;
            __global const float *wr = wc + p * KW * OP;
            for (int q = 0; q < KW; ++q) {
                VF xv[PR];
#pragma unroll
                for (int r = 0; r < PR; ++r)
                    xv[r] = VLOAD(0, xr + q + r * PX);
                __global const float *wq = wr + q * OP;
#pragma unroll
                for (int k = 0; k < OB; ++k) {
                    const VF wv = (VF)(wq[k]);
#pragma unroll
                    for (int r = 0; r < PR; ++r)
                        acc[k][r] = mad(wv, xv[r], acc[k][r]);
                }
            }
        }
    }

    const int plane = OH * OW;
#pragma unroll
    for (int k = 0; k < OB; ++k) {
        const int o = o0 + k;
        if (o >= O)
            continue;
        __global float *yo = y + ((size_t)n * O + o) * plane;
        const float bias = has_bias ? b[o] : 0.0f;
#pragma unroll
        for (int r = 0; r < PR; ++r) {
            const int m = m0 + r * PX;
            const int i = m / WP;
            store_grid(acc[k][r] + (VF)(bias), yo, i, m - i * WP, WP, OH, OW);
        }
    }
}

/* ---- stride-1 weight gradient on the rows of dy ----------------------------------------------
 *
 *   dw[o,c,p,q] = sum_{n,i,j} dy[n,o,i,j] * xf[n, c, (i + p)*WP + j + q],   db[o] = sum dy[n,o,i,j]
 *
 * xf as for conv2d_fwd_plane (pad2d: planes inside their zero border, rows of WP values, LS per
 * plane with at least RX zeros after the last row). Each weight is a dot product of a dy plane
 * with a shifted window of an x plane, both contiguous along a row, so a work-item takes DOB
 * filters x TB taps of one input channel (DOB*TB vector accumulators of RX lanes) and walks the
 * rows of dy in RX-wide vectors, dy in NCHW as it comes: per vector, DOB loads of dy and TB of
 * x feed DOB*TB multiply-adds. A row's last vector of OW % RX columns is masked, dy and x both
 * (its lanes past the row multiply zeros by zeros: a NaN there reaches no weight it does not
 * reach in the reference). The lanes are added once at the end. Taps past KH*KW in the last
 * block are clamped to the last tap and not stored.
 * global = (C * ceil(KH*KW/TB), ceil(O/DOB), S): images n = s*NPER .. min(N, (s+1)*NPER)-1
 * into part[s, o, c, p, q] (S == 1: part is dw) and, for the first tap block of channel 0
 * when has_bias, dbpart[s, o]. */
#ifndef RX
#define RX 16
#endif
#define RVF CAT(float, RX)
#define RVLOAD CAT(vload, RX)
#define RVSTORE CAT(vstore, RX)

__constant float LANE[16] = {0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f,
                             8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f};

#define RVI CAT(int, RX)

/* d[0 .. n-1] as a vector, zeros in the lanes from n on (``head``: the lanes below n);
 * ``room`` says whether RX values from d are inside the buffer (only a buffer's very last row
 * is not) */
/* v's lanes added up */
inline float sum_lanes(const RVF v)
{
    float t[RX];
    RVSTORE(v, 0, t);
    float sum = 0.0f;
    for (int e = 0; e < RX; ++e)
        sum += t[e];
    return sum;
}

inline RVF load_head(__global const float *d, const int n, const RVI head, const int room)
{
    if (room)
        return select((RVF)(0.0f), RVLOAD(0, d), head);
    float t[RX];
    for (int e = 0; e < RX; ++e)
        t[e] = e < n ? d[e] : 0.0f;
    return RVLOAD(0, t);
}

__kernel void conv2d_bwd_dw_rows(__global const float *xf, __global const float *dy,
                                 __global float *part, __global float *dbpart,
                                 const int has_bias, const int N, const int NPER,
                                 const int C, const int LS, const int WP,
                                 const int O, const int OH, const int OW,
                                 const int KH, const int KW)
{
    const int KK = KH * KW, ntb = (KK + TB - 1) / TB;
    const int g = get_global_id(0), o0 = get_global_id(1) * DOB, s = get_global_id(2);
    if (g >= C * ntb || o0 >= O)
        return;
    const int c = g / ntb, t0 = (g - c * ntb) * TB;
    const int plane = OH * OW;
    int off[TB];
    tap_offsets(off, t0, KK, KW, WP);
    int dyoff[DOB];
#pragma unroll
    for (int k = 0; k < DOB; ++k)
        dyoff[k] = min(o0 + k, O - 1) * plane;

    RVF acc[DOB][TB], bacc[DOB];
#pragma unroll
    for (int k = 0; k < DOB; ++k) {
        bacc[k] = (RVF)(0.0f);
#pragma unroll
        for (int t = 0; t < TB; ++t)
            acc[k][t] = (RVF)(0.0f);
    }
    const int full = OW / RX * RX, rest = OW - full;
    const RVI head = isless(RVLOAD(0, LANE), (RVF)(rest));
    const size_t total = (size_t)N * O * plane;
    const int n_lo = s * NPER, n_hi = min(N, n_lo + NPER);
    for (int n = n_lo; n < n_hi; ++n) {
        __global const float *xc = xf + ((size_t)n * C + c) * LS;
        __global const float *dyn = dy + (size_t)n * O * plane;
        for (int i = 0; i < OH; ++i) {
            __global const float *xr = xc + i * WP;
            __global const float *dr = dyn + i * OW;
            for (int j = 0; j < full; j += RX) {
                RVF xv[TB];
#pragma unroll
                for (int t = 0; t < TB; ++t)
                    xv[t] = RVLOAD(0, xr + off[t] + j);
#pragma unroll
                for (int k = 0; k < DOB; ++k) {
                    const RVF dv = RVLOAD(0, dr + dyoff[k] + j);
                    bacc[k] += dv;
#pragma unroll
                    for (int t = 0; t < TB; ++t)
                        acc[k][t] = mad(dv, xv[t], acc[k][t]);
                }
            }
            if (rest) {                 /* x masked too: no 0 * NaN from past the row */
                RVF xv[TB];
#pragma unroll
                for (int t = 0; t < TB; ++t)
                    xv[t] = select((RVF)(0.0f), RVLOAD(0, xr + off[t] + full), head);
#pragma unroll
                for (int k = 0; k < DOB; ++k) {
                    const size_t at = (size_t)(dr - dy) + dyoff[k] + full;
                    const RVF dv = load_head(dr + dyoff[k] + full, rest, head, at + RX <= total);
                    bacc[k] += dv;
#pragma unroll
                    for (int t = 0; t < TB; ++t)
                        acc[k][t] = mad(dv, xv[t], acc[k][t]);
                }
            }
        }
    }

    const int CKK = C * KK;
    __global float *dst = part + (size_t)s * O * CKK + c * KK + t0;
#pragma unroll
    for (int k = 0; k < DOB; ++k) {
        const int o = o0 + k;
        if (o >= O)
            continue;
#pragma unroll
        for (int t = 0; t < TB; ++t)
            if (t0 + t < KK)
                dst[(size_t)o * CKK + t] = sum_lanes(acc[k][t]);
        if (has_bias && g == 0)
            dbpart[(size_t)s * O + o] = sum_lanes(bacc[k]);
    }
}

/* ---- input gradient of a strided convolution, one stride phase at a time ----------------------
 *
 *   dx[n,c,h,x] = sum_{o,p,q} dy[n,o,i,j] * w[o,c,p,q]  over i*SH = h+PT-p, j*SW = x+PL-q
 *
 * The positions of one phase (a, b) = (h % SH, x % SW), h = a + SH*h', x = b + SW*x', are
 * reached only by the taps p = p0 + SH*t, q = q0 + SW*u with p0 = (a + PT) % SH and
 * q0 = (b + PL) % SW, through dy[i = h' + da - t, j = x' + db - u] (da = (a + PT - p0) / SH,
 * db likewise): a stride-1 correlation of dy with that phase's taps, consecutive x' reading
 * consecutive j. So a work-item computes OB input channels x PX consecutive x' of one phase row
 * h' (per tap and filter one vector of dy, OB broadcast weights, OB multiply-adds): the
 * reference's multiply-adds and no others, where testing every tap of every position would skip
 * most of them (3 of 4 positions in a stride-2 layer have fewer than 9 taps). A phase without
 * taps (a 1x1 kernel's odd positions) stores zeros. The stores are SW apart.
 * global = (ceil(H/SH) * ceil(ceil(W/SW)/PX), ceil(C/OB), N*SH*SW). */
__kernel void conv2d_bwd_dx_phase(__global const float *dy, __global const float *w,
                                  __global float *dx,
                                  const int C, const int H, const int W,
                                  const int O, const int OH, const int OW,
                                  const int KH, const int KW, const int SH, const int SW,
                                  const int PT, const int PL)
{
    const int HQ = (H + SH - 1) / SH, WQ = (W + SW - 1) / SW;
    const int nbx = (WQ + PX - 1) / PX;
    const int g0 = get_global_id(0), c0 = get_global_id(1) * OB, g2 = get_global_id(2);
    const int n = g2 / (SH * SW), phase = g2 - n * (SH * SW);
    const int a = phase / SW, b = phase - (phase / SW) * SW;
    const int hq = g0 / nbx, xq0 = (g0 - hq * nbx) * PX;
    const int h = a + SH * hq;
    if (g0 >= HQ * nbx || c0 >= C || h >= H)
        return;
    const int p0 = (a + PT) % SH, q0 = (b + PL) % SW;
    const int da = (a + PT - p0) / SH, db = (b + PL - q0) / SW;
    const int KK = KH * KW;
    int woff[OB];
#pragma unroll
    for (int k = 0; k < OB; ++k)
        woff[k] = min(c0 + k, C - 1) * KK;

    VF acc[OB];
#pragma unroll
    for (int k = 0; k < OB; ++k)
        acc[k] = (VF)(0.0f);
    const int plane = OH * OW;
    __global const float *dyn = dy + (size_t)n * O * plane;
    for (int p = p0, t = 0; p < KH; p += SH, ++t) {
        const int i = hq + da - t;
        if (i < 0 || i >= OH)
            continue;
        for (int q = q0, u = 0; q < KW; q += SW, ++u) {
            const int j0 = xq0 + db - u;
            __global const float *dyr = dyn + i * OW;
            __global const float *wq = w + p * KW + q;
            for (int o = 0; o < O; ++o) {
                const VF dv = load_cols(dyr + (size_t)o * plane, j0, 1, OW);
                __global const float *wo = wq + (size_t)o * C * KK;
#pragma unroll
                for (int k = 0; k < OB; ++k)
                    acc[k] = mad((VF)(wo[woff[k]]), dv, acc[k]);
            }
        }
    }

    __global float *dst = dx + (size_t)n * C * H * W + h * W + b + SW * xq0;
#pragma unroll
    for (int k = 0; k < OB; ++k) {
        if (c0 + k >= C)
            continue;
        float v[PX];
        VSTORE(acc[k], 0, v);
        __global float *dc = dst + (size_t)(c0 + k) * H * W;
        for (int e = 0; e < PX && b + SW * (xq0 + e) < W; ++e)
            dc[SW * e] = v[e];
    }
}
