/* activations.cl -- element-wise activations, forward and backward (float32).
 * KIND (compile-time, one program per activation): 0 relu, 1 leaky_relu (slope alpha below
 * zero), 2 sigmoid, 3 tanh.
 * One work-item per 16 consecutive elements (one float16: explicit vectors, which a CPU
 * driver turns into SIMD instructions; one work-item per element ran 5-7x slower on PoCL), the
 * last work-item also doing the n % 16 remainder one element at a time; n = number of elements.
 * NaN propagates as in the numpy reference: relu keeps a NaN input (fmax would drop it), and
 * its gradient is dy * (x > 0), NaN for a NaN dy even where x <= 0. */

#ifndef KIND
#define KIND 0
#endif

/* f(v), for a float16 or a float (the comparisons give a lane mask or an int; select picks its
 * second argument where the mask is set) */
#if KIND == 0
#define ACT16(v) select(v, (float16)(0.0f), (v) <= 0.0f)
#define ACT1(v) ((v) <= 0.0f ? 0.0f : (v))
#elif KIND == 1
#define ACT16(v) select((v) * alpha, v, (v) > 0.0f)
#define ACT1(v) ((v) > 0.0f ? (v) : (v) * alpha)
#elif KIND == 2
#define ACT16(v) (1.0f / (1.0f + exp(-(v))))
#define ACT1(v) (1.0f / (1.0f + exp(-(v))))
#else
#define ACT16(v) tanh(v)
#define ACT1(v) tanh(v)
#endif

/* dx = dy * f'(x), written with the forward output y where that is cheaper:
 * sigmoid' = y (1 - y), tanh' = 1 - y^2 */
#if KIND == 0
#define GRAD16(d, xv, yv) select((d) * 0.0f, d, (xv) > 0.0f)
#define GRAD1(d, xv, yv) ((xv) > 0.0f ? (d) : (d) * 0.0f)
#elif KIND == 1
#define GRAD16(d, xv, yv) select((d) * alpha, d, (xv) > 0.0f)
#define GRAD1(d, xv, yv) ((xv) > 0.0f ? (d) : (d) * alpha)
#elif KIND == 2
#define GRAD16(d, xv, yv) ((d) * (yv) * (1.0f - (yv)))
#define GRAD1(d, xv, yv) ((d) * (yv) * (1.0f - (yv)))
#else
#define GRAD16(d, xv, yv) ((d) * (1.0f - (yv) * (yv)))
#define GRAD1(d, xv, yv) ((d) * (1.0f - (yv) * (yv)))
#endif

/* relu and leaky relu read x, sigmoid and tanh y (the other may be a dummy buffer) */
#if KIND <= 1
#define LOADX16(i) vload16(0, x + (i))
#define LOADX1(i) x[i]
#define LOADY16(i) ((float16)(0.0f))
#define LOADY1(i) 0.0f
#else
#define LOADX16(i) ((float16)(0.0f))
#define LOADX1(i) 0.0f
#define LOADY16(i) vload16(0, y + (i))
#define LOADY1(i) y[i]
#endif

/* y = f(x) */
__kernel void act_fwd(__global const float *x, __global float *y, const int n, const float alpha)
{
    const int i = get_global_id(0) * 16;
    if (i + 16 <= n) {
        const float16 v = vload16(0, x + i);
        vstore16(ACT16(v), 0, y + i);
    } else {
        for (int k = i; k < n; ++k) {
            const float v = x[k];
            y[k] = ACT1(v);
        }
    }
}

__kernel void act_bwd(__global const float *x, __global const float *y,
                      __global const float *dy, __global float *dx, const int n, const float alpha)
{
    const int i = get_global_id(0) * 16;
    if (i + 16 <= n) {
        const float16 d = vload16(0, dy + i);
        vstore16(GRAD16(d, LOADX16(i), LOADY16(i)), 0, dx + i);
    } else {
        for (int k = i; k < n; ++k) {
            const float d = dy[k];
            dx[k] = GRAD1(d, LOADX1(k), LOADY1(k));
        }
    }
}
