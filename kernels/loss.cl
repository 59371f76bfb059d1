/* loss.cl -- softmax cross-entropy over a batch, reduced on the device.
 *
 * For row r with logits l, label t, K classes and label smoothing eps, the target is
 * q_k = (1 - eps) [k == t] + eps / K (one-hot when eps = 0), and with m = max_k l_k:
 *   loss_r = log(sum_k exp(l_k - m)) - (1 - eps) (l_t - m) - eps/K sum_k (l_k - m)
 *   dlogits[r, k] = (softmax(l)_k - q_k) / N           (gradient of the MEAN loss)
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
                  __global float *dlogits, __global float *out, const int N, const int K,
                  const float smoothing)
{
    __local float sloss[LS];
    __local float scorrect[LS];
    const int lid = get_local_id(0);
    float loss = 0.0f, correct = 0.0f;
    const float invn = 1.0f / (float)N;
    const float keep = 1.0f - smoothing, spread = smoothing / (float)K;
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
        float total = 0.0f;                         /* sum_k (l_k - m), for the smoothing */
        for (int k = 0; k < K; ++k) {
            total += l[k] - mx;
            d[k] = (exp(l[k] - mx - lse) - (k == t ? keep + spread : spread)) * invn;
        }
        if (t >= 0 && t < K) {
            loss += lse - keep * (l[t] - mx);
            if (smoothing != 0.0f)
                loss -= spread * total;
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
