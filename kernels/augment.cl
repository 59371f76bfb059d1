/* augment.cl -- data augmentation: each image of a batch shifted and optionally mirrored.
 *
 * draws holds three rows of n ints: dy, dx, flip. For output element (k, ch, i, j):
 *   s = j + dx[k];  y = x[k, ch, i + dy[k], flip[k] ? w-1-s : s]
 * and 0 where the row i + dy[k] or the column s falls outside the image (zeros shifted in).
 * A pure copy: the result equals numpy_ref's bit for bit.
 */

__kernel void shift_flip(__global const float *x, __global float *y,
                         __global const int *draws, const int n, const int c, const int h,
                         const int w)
{
    const int idx = get_global_id(0);
    if (idx >= n * c * h * w)
        return;
    const int j = idx % w;
    const int i = (idx / w) % h;
    const int k = idx / (w * h * c);
    const int si = i + draws[k];
    const int s = j + draws[n + k];
    float v = 0.0f;
    if (si >= 0 && si < h && s >= 0 && s < w) {
        const int sj = draws[2 * n + k] ? w - 1 - s : s;
        v = x[idx - (i * w + j) + si * w + sj];
    }
    y[idx] = v;
}
