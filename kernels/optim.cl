/* optim.cl -- optimizer steps, in place, one work-item per parameter element (float32).
 * The formulas are PyTorch's (see nbcnn/backends/base.py); scalars that depend only on the
 * step (bias corrections, decoupled decay factor) are computed on the host in double. */

/* SGD: g = grad + wd*param ; v = momentum*v + g ; param -= lr * (nesterov ? g + momentum*v : v)
 * has_velocity == 0 (momentum 0): param -= lr * g. */
__kernel void sgd_step(__global float *param, __global const float *grad, __global float *velocity,
                       const int n, const float lr, const float momentum, const int nesterov,
                       const float weight_decay, const int has_velocity)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float p = param[i];
    float g = grad[i];
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    if (!has_velocity) {
        param[i] = p - lr * g;
        return;
    }
    const float v = momentum * velocity[i] + g;
    velocity[i] = v;
    param[i] = p - lr * (nesterov ? g + momentum * v : v);
}

/* Adam / AdamW.  decay = 1 - lr*wd (decoupled) or 1; l2 = wd when not decoupled, else 0.
 * m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g^2 ; param -= lr * (m/bc1) / (sqrt(v/bc2) + eps)
 * with bc1 = 1 - b1^step, bc2 = 1 - b2^step. */
__kernel void adam_step(__global float *param, __global const float *grad,
                        __global float *m, __global float *v, const int n,
                        const float lr, const float beta1, const float beta2, const float eps,
                        const float bc1, const float bc2, const float l2, const float decay)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    float p = param[i] * decay;
    float g = grad[i];
    if (l2 != 0.0f)
        g = g + l2 * p;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = p - lr * (mi / bc1) / (sqrt(vi / bc2) + eps);
}

/* RMSprop: g = grad + wd*param ; s = alpha*s + (1-alpha)*g^2 ; u = g / (sqrt(s) + eps)
 * with momentum: buf = momentum*buf + u ; param -= lr*buf ; else param -= lr*u. */
__kernel void rmsprop_step(__global float *param, __global const float *grad,
                           __global float *square_avg, __global float *buf, const int n,
                           const float lr, const float alpha, const float eps,
                           const float momentum, const float weight_decay, const int has_momentum)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float p = param[i];
    float g = grad[i];
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    const float s = alpha * square_avg[i] + (1.0f - alpha) * g * g;
    square_avg[i] = s;
    float u = g / (sqrt(s) + eps);
    if (has_momentum) {
        u = momentum * buf[i] + u;
        buf[i] = u;
    }
    param[i] = p - lr * u;
}

/* Adagrad: g = grad + wd*param ; sum += g^2 ; param -= clr * g / (sqrt(sum) + eps)
 * where clr = lr / (1 + (step-1)*lr_decay) comes from the host. */
__kernel void adagrad_step(__global float *param, __global const float *grad,
                           __global float *state_sum, const int n, const float clr,
                           const float eps, const float weight_decay)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float p = param[i];
    float g = grad[i];
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    const float s = state_sum[i] + g * g;
    state_sum[i] = s;
    param[i] = p - clr * g / (sqrt(s) + eps);
}

/* Adadelta: g = grad + wd*param ; s = rho*s + (1-rho)*g^2 ;
 * d = sqrt(acc + eps) / sqrt(s + eps) * g ; acc = rho*acc + (1-rho)*d^2 ; param -= lr*d. */
__kernel void adadelta_step(__global float *param, __global const float *grad,
                            __global float *square_avg, __global float *acc_delta, const int n,
                            const float lr, const float rho, const float eps,
                            const float weight_decay)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float p = param[i];
    float g = grad[i];
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    const float s = rho * square_avg[i] + (1.0f - rho) * g * g;
    square_avg[i] = s;
    const float acc = acc_delta[i];
    const float d = sqrt(acc + eps) / sqrt(s + eps) * g;
    acc_delta[i] = rho * acc + (1.0f - rho) * d * d;
    param[i] = p - lr * d;
}

/* x *= factor, in place (gradient clipping). */
__kernel void scale(__global float *x, const int n, const float factor)
{
    const int i = get_global_id(0);
    if (i < n)
        x[i] *= factor;
}
