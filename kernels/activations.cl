/* activations.cl -- element-wise activations, forward and backward (float32).
 * kind: 0 relu, 1 leaky_relu (slope alpha below zero), 2 sigmoid, 3 tanh.
 * One work-item per element; n = number of elements.
 * NaN propagates as in the numpy reference: relu keeps a NaN input (fmax would drop it), and
 * its gradient is dy * (x > 0), NaN for a NaN dy even where x <= 0. */

/* y = f(x) */
__kernel void act_fwd(__global const float *x, __global float *y, const int n,
                      const int kind, const float alpha)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float v = x[i];
    float r;
    if (kind == 0)      r = v <= 0.0f ? 0.0f : v;
    else if (kind == 1) r = v > 0.0f ? v : v * alpha;
    else if (kind == 2) r = 1.0f / (1.0f + exp(-v));
    else                r = tanh(v);
    y[i] = r;
}

/* dx = dy * f'(x), written with the forward output y where that is cheaper:
 * sigmoid' = y (1 - y), tanh' = 1 - y^2. */
__kernel void act_bwd(__global const float *x, __global const float *y,
                      __global const float *dy, __global float *dx, const int n,
                      const int kind, const float alpha)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float d = dy[i];
    float r;
    if (kind == 0)      r = x[i] > 0.0f ? d : d * 0.0f;
    else if (kind == 1) r = x[i] > 0.0f ? d : d * alpha;
    else if (kind == 2) { const float s = y[i]; r = d * s * (1.0f - s); }
    else                { const float t = y[i]; r = d * (1.0f - t * t); }
    dx[i] = r;
}
