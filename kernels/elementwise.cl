/* elementwise.cl -- element-wise sums (float32): a residual block's body + shortcut, and the sum
 * of its two paths' input gradients.  One work-item per element; n = number of elements.
 * Built without fast-math flags, so NaN and infinity propagate as in numpy. */

/* out = a + b.  Each work-item reads a[i], b[i] and writes only out[i], so out may be a or b
 * itself (the sum then accumulates in place, with no new buffer). */
__kernel void add(__global const float *a, __global const float *b, __global float *out,
                  const int n)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    out[i] = a[i] + b[i];
}
