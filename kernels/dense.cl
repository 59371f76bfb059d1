/* dense.cl -- tiled matrix multiply for the dense (fully connected) layer.
 *
 *   C[m, n] = sum_k A(m, k) * B(k, n)  (+ bias[n])
 *
 * A and B are addressed through strides, A(m,k) = A[m*sam + k*sak], B(k,n) = B[k*sbk + n*sbn],
 * so one kernel serves all three products of a dense layer:
 *   forward  y  = x @ w.T : A = x  (sam=in, sak=1),  B(k,n) = w[n,k] (sbk=1,  sbn=in)
 *   weights  dw = dy.T @ x: A(m,k) = dy[k,m] (sam=1, sak=out), B = x (sbk=in, sbn=1)
 *   input    dx = dy @ w  : A = dy (sam=out, sak=1), B = w (sbk=in, sbn=1)
 *
 * Tiling: a work-group computes a TM x TN tile of C; it walks K in steps of TK, staging a
 * TK x TM slice of A and a TK x TN slice of B in local memory (zero-filled past the edges), and
 * each of its (TN/RN) x (TM/RM) work-items accumulates an RM x RN register block from them.
 * TM, TN, TK, RM, RN are #defines chosen by the host (auto-tuned per device). That is the
 * GPU form; CPU devices take gemm_dot / gemm_rows below (or gemm_simple for other strides).
 * Local size must be (TN/RN, TM/RM); global = (ceil(N/TN)*TN/RN, ceil(M/TM)*TM/RM).
 */

#ifndef TM
#define TM 32
#endif
#ifndef TN
#define TN 32
#endif
#ifndef TK
#define TK 16
#endif
#ifndef RM
#define RM 4
#endif
#ifndef RN
#define RN 4
#endif

#define LX (TN / RN)
#define LY (TM / RM)
#define NT (LX * LY)

__kernel __attribute__((reqd_work_group_size(LX, LY, 1)))
void gemm(__global const float *A, const int sam, const int sak,
          __global const float *B, const int sbk, const int sbn,
          __global const float *bias, const int has_bias,
          __global float *Cm, const int M, const int N, const int K)
{
    __local float As[TK][TM];
    __local float Bs[TK][TN];
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int lid = ty * LX + tx;
    const int n0 = get_group_id(0) * TN;
    const int m0 = get_group_id(1) * TM;

    float acc[RM][RN];
#pragma unroll
    for (int r = 0; r < RM; ++r)
#pragma unroll
        for (int c = 0; c < RN; ++c)
            acc[r][c] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += TK) {
        /* stage the tiles; the element order follows the unit stride so reads are contiguous */
        for (int e = lid; e < TK * TM; e += NT) {
            int kk, mm;
            if (sak == 1) { mm = e / TK; kk = e - mm * TK; }
            else          { kk = e / TM; mm = e - kk * TM; }
            const int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < M && k < K) ? A[m * sam + k * sak] : 0.0f;
        }
        for (int e = lid; e < TK * TN; e += NT) {
            int kk, nn;
            if (sbk == 1) { nn = e / TK; kk = e - nn * TK; }
            else          { kk = e / TN; nn = e - kk * TN; }
            const int n = n0 + nn, k = k0 + kk;
            Bs[kk][nn] = (n < N && k < K) ? B[k * sbk + n * sbn] : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll 4
        for (int kk = 0; kk < TK; ++kk) {
            float a[RM], b[RN];
#pragma unroll
            for (int r = 0; r < RM; ++r)
                a[r] = As[kk][ty * RM + r];
#pragma unroll
            for (int c = 0; c < RN; ++c)
                b[c] = Bs[kk][tx * RN + c];
#pragma unroll
            for (int r = 0; r < RM; ++r)
#pragma unroll
                for (int c = 0; c < RN; ++c)
                    acc[r][c] = mad(a[r], b[c], acc[r][c]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

#pragma unroll
    for (int r = 0; r < RM; ++r) {
        const int m = m0 + ty * RM + r;
        if (m >= M)
            continue;
#pragma unroll
        for (int c = 0; c < RN; ++c) {
            const int n = n0 + tx * RN + c;
            if (n < N)
                Cm[m * N + n] = acc[r][c] + (has_bias ? bias[n] : 0.0f);
        }
    }
}

/* The same product without tiles: one work-item per element of C, global = (N, M). On CPU
 * devices this is far cheaper for small matrices than a work-group with local memory and
 * barriers; the k order (and so the sum) is the tiled kernel's. */
__kernel void gemm_simple(__global const float *A, const int sam, const int sak,
                          __global const float *B, const int sbk, const int sbn,
                          __global const float *bias, const int has_bias,
                          __global float *Cm, const int M, const int N, const int K)
{
    const int n = get_global_id(0), m = get_global_id(1);
    if (n >= N || m >= M)
        return;
    __global const float *a = A + (size_t)m * sam;
    __global const float *b = B + (size_t)n * sbn;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k)
        acc = mad(a[(size_t)k * sak], b[(size_t)k * sbk], acc);
    Cm[(size_t)m * N + n] = acc + (has_bias ? bias[n] : 0.0f);
}

/* ---- the CPU forms: wide vectors and a register block per work-item, no local memory ------
 * (local memory is emulated on CPU devices, and a work-group's barriers cost more than they
 * save). Edge blocks clamp their row / column reads and mask their stores. */
#ifndef VK
#define VK 16
#endif
#ifndef VN
#define VN 16
#endif
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define VKF CAT(float, VK)
#define VNF CAT(float, VN)

/* A and B both contiguous along k: A(m,k) = A[m*sam + k], B(k,n) = B[k + n*sbn] (the dense
 * forward, x @ w.T). RM x RN dot products per work-item, each summed in VK-wide partial sums
 * along k, the K % VK tail scalar. global = (ceil(N/RN), ceil(M/RM)). */
__kernel void gemm_dot(__global const float *A, const int sam,
                       __global const float *B, const int sbn,
                       __global const float *bias, const int has_bias,
                       __global float *Cm, const int M, const int N, const int K)
{
    const int n0 = get_global_id(0) * RN, m0 = get_global_id(1) * RM;
    if (n0 >= N || m0 >= M)
        return;
    __global const float *a[RM];
    __global const float *b[RN];
#pragma unroll
    for (int r = 0; r < RM; ++r)
        a[r] = A + (size_t)min(m0 + r, M - 1) * sam;
#pragma unroll
    for (int c = 0; c < RN; ++c)
        b[c] = B + (size_t)min(n0 + c, N - 1) * sbn;
    VKF acc[RM][RN];
#pragma unroll
    for (int r = 0; r < RM; ++r)
#pragma unroll
        for (int c = 0; c < RN; ++c)
            acc[r][c] = (VKF)(0.0f);
    const int kv = K / VK * VK;
    for (int k = 0; k < kv; k += VK) {
        VKF av[RM], bv[RN];
#pragma unroll
        for (int r = 0; r < RM; ++r)
            av[r] = CAT(vload, VK)(0, a[r] + k);
#pragma unroll
        for (int c = 0; c < RN; ++c)
            bv[c] = CAT(vload, VK)(0, b[c] + k);
#pragma unroll
        for (int r = 0; r < RM; ++r)
#pragma unroll
            for (int c = 0; c < RN; ++c)
                acc[r][c] = mad(av[r], bv[c], acc[r][c]);
    }
#pragma unroll
    for (int r = 0; r < RM; ++r) {
        const int m = m0 + r;
#pragma unroll
        for (int c = 0; c < RN; ++c) {
            float v[VK];
            CAT(vstore, VK)(acc[r][c], 0, v);
            float s = 0.0f;
            for (int e = 0; e < VK; ++e)
                s += v[e];
            for (int k = kv; k < K; ++k)
                s = mad(a[r][k], b[c][k], s);
            const int n = n0 + c;
            if (m < M && n < N)
                Cm[(size_t)m * N + n] = s + (has_bias ? bias[n] : 0.0f);
        }
    }
}

/* B contiguous along n: B(k,n) = B[k*sbk + n], A(m,k) = A[m*sam + k*sak] (the dense layer's
 * weight and input gradients). RM rows x VN columns per work-item: per k one vector of B and
 * RM broadcast elements of A. global = (ceil(N/VN), ceil(M/RM)). */
__kernel void gemm_rows(__global const float *A, const int sam, const int sak,
                        __global const float *B, const int sbk,
                        __global const float *bias, const int has_bias,
                        __global float *Cm, const int M, const int N, const int K)
{
    const int n0 = get_global_id(0) * VN, m0 = get_global_id(1) * RM;
    if (n0 >= N || m0 >= M)
        return;
    __global const float *a[RM];
#pragma unroll
    for (int r = 0; r < RM; ++r)
        a[r] = A + (size_t)min(m0 + r, M - 1) * sam;
    VNF acc[RM];
#pragma unroll
    for (int r = 0; r < RM; ++r)
        acc[r] = (VNF)(0.0f);
    __global const float *bk = B + n0;
    if (n0 + VN <= N) {
        for (int k = 0; k < K; ++k) {
            const VNF bv = CAT(vload, VN)(0, bk + (size_t)k * sbk);
#pragma unroll
            for (int r = 0; r < RM; ++r)
                acc[r] = mad((VNF)(a[r][(size_t)k * sak]), bv, acc[r]);
        }
    } else {                                   /* the last, partial block of columns */
        const int nn = N - n0;
        for (int k = 0; k < K; ++k) {
            float t[VN];
            for (int e = 0; e < VN; ++e)
                t[e] = e < nn ? bk[(size_t)k * sbk + e] : 0.0f;
            const VNF bv = CAT(vload, VN)(0, t);
#pragma unroll
            for (int r = 0; r < RM; ++r)
                acc[r] = mad((VNF)(a[r][(size_t)k * sak]), bv, acc[r]);
        }
    }
#pragma unroll
    for (int r = 0; r < RM; ++r) {
        const int m = m0 + r;
        if (m >= M)
            continue;
        float v[VN];
        CAT(vstore, VN)(acc[r], 0, v);
        for (int e = 0; e < VN && n0 + e < N; ++e)
            Cm[(size_t)m * N + n0 + e] = v[e] + (has_bias ? bias[n0 + e] : 0.0f);
    }
}
