/* loss.cl -- softmax cross-entropy over a batch, reduced on the device.
 *
 * For row r with logits l and label t:  loss_r = log(sum_k exp(l_k - max)) - (l_t - max)
 *   dlogits[r, k] = (softmax(l)_k - [k == t]) / N      (gradient of the MEAN loss)
 *   correct_r     = [first arg-max of l == t]
 * One work-group of LS work-items (LS a power of two, #define) walks the rows and reduces
 * loss and correct count in local memory; out[0] = mean loss, out[1] = correct count
 * (exact as a float up to 2^24 rows).  A label outside [0, K) gives a NaN loss.
 */

#ifndef LS
#define LS 64
#endif

__kernel __attribute__((reqd_work_group_size(LS, 1, 1)))
void softmax_xent(__global const float *logits, __global const int *labels,
                  __global float *dlogits, __global float *out, const int N, const int K)
{
    __local float sloss[LS];
    __local float scorrect[LS];
    const int lid = get_local_id(0);
    float loss = 0.0f, correct = 0.0f;
    const float invn = 1.0f / (float)N;
    for (int r = lid; r < N; r += LS) {
        __global const float *l = logits + (size_t)r * K;
        __global float *d = dlogits + (size_t)r * K;
        const int t = labels[r];
        float mx = l[0];
        int am = 0;
        for (int k = 1; k < K; ++k)
            if (l[k] > mx) { mx = l[k]; am = k; }
        float s = 0.0f;
        for (int k = 0; k < K; ++k)
            s += exp(l[k] - mx);
        const float lse = log(s);
        for (int k = 0; k < K; ++k)
            d[k] = (exp(l[k] - mx - lse) - (k == t ? 1.0f : 0.0f)) * invn;
        if (t >= 0 && t < K) {
            loss += lse - (l[t] - mx);
            correct += (am == t) ? 1.0f : 0.0f;
        } else {
            loss += NAN;
        }
    }
    sloss[lid] = loss;
    scorrect[lid] = correct;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = LS / 2; step > 0; step >>= 1) {
        if (lid < step) {
            sloss[lid] += sloss[lid + step];
            scorrect[lid] += scorrect[lid + step];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) {
        out[0] = sloss[0] * invn;
        out[1] = scorrect[0];
    }
}
