/* dropout.cl -- inverted dropout with counter-based random numbers.
 *
 * u(index) = (lowbias32(index + lowbias32(seed)) >> 8) * 2^-24, in uint32 arithmetic: the same
 * numbers as nbcnn.backends.base.dropout_uniform, so every backend draws the same mask.
 * An element is kept when u >= p and then scaled by scale = 1/(1-p) (computed on the host).
 */

inline uint lowbias32(uint x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

/* mask[i] = u(i) >= p ? scale : 0 ; y[i] = x[i] * mask[i].  seed_hash = lowbias32(seed). */
__kernel void dropout_fwd(__global const float *x, __global float *y, __global float *mask,
                          const int n, const uint seed_hash, const float p, const float scale)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const uint h = lowbias32((uint)i + seed_hash);
    const float u = (float)(h >> 8) * (1.0f / 16777216.0f);
    const float m = u >= p ? scale : 0.0f;
    mask[i] = m;
    y[i] = x[i] * m;
}

/* dx = dy * mask */
__kernel void dropout_bwd(__global const float *dy, __global const float *mask,
                          __global float *dx, const int n)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    dx[i] = dy[i] * mask[i];
}
