/* scheduler.c - FlowMatchEulerDiscreteScheduler sigmas / timesteps / Euler
 * step in float32, operation for operation as diffusers 0.42.1
 * (schedulers/scheduling_flow_match_euler_discrete.py set_timesteps/step and
 * pipelines/z_image/pipeline_z_image.py __call__).  See scheduler.h.
 *
 * No compiler fusions allowed (the fmaf calls are the ones torch's linspace
 * kernel has): fp-contract is forced off as in rng.c.
 */
#if defined(__FAST_MATH__)
#error "scheduler.c must be compiled without -ffast-math (bit-exact float32 arithmetic)"
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "scheduler.h"

#include <math.h>

void zsched_linspace(float start, float end, int n, float *out) {
    if (n <= 0) return;
    if (n == 1) { /* torch fills `start` */
        out[0] = start;
        return;
    }
    /* aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp linspace_kernel:
     * step = (end - start) / (steps - 1) in float; the two halves are
     * `start + step*idx` and `end - step*(steps-idx-1)`, contracted to FMAs
     * by GCC in the AVX2/AVX-512 builds. */
    float step = (end - start) / (float)(n - 1);
    int half = n / 2;
    for (int i = 0; i < n; i++)
        out[i] = i < half ? fmaf(step, (float)i, start) : fmaf(-step, (float)(n - i - 1), end);
}

int zsched_sigmas(const sched_config *c, int steps, float *sigmas, float *t_in, float *timesteps, zerr *e) {
    if (!c || !sigmas) return zerr_set(e, ZE_INVALID, "scheduler: no config or output");
    if (steps < 1 || steps > ZSCHED_MAX_STEPS)
        return zerr_set(e, ZE_INVALID, "scheduler: steps must be 1..%d, got %d", ZSCHED_MAX_STEPS, steps);
    if (c->use_dynamic_shifting)
        return zerr_set(e, ZE_UNSUPPORTED, "scheduler: use_dynamic_shifting is not supported (Z-Image uses a static shift)");
    if (!(c->shift > 0) || !isfinite(c->shift))
        return zerr_set(e, ZE_INVALID, "scheduler: shift must be a positive number, got %g", (double)c->shift);
    if (c->num_train_timesteps < 1) return zerr_set(e, ZE_INVALID, "scheduler: num_train_timesteps must be >= 1");

    /* get_default_z_image_sigmas: torch.linspace(1.0, 1 / N, N) (float32;
     * the Python double 1/N is rounded to float by the Scalar conversion),
     * .tolist() and np.float32 round-trip exactly. */
    zsched_linspace(1.0f, (float)(1.0 / steps), steps, sigmas);

    /* sigmas = self.shift * sigmas / (1 + (self.shift - 1) * sigmas), numpy
     * float32 array with Python float scalars (cast to float32 first).
     * (self.shift - 1) is evaluated in double from the config value. */
    float sh = c->shift;
    float shm1 = (float)((double)c->shift - 1.0);
    for (int i = 0; i < steps; i++) {
        float s = sigmas[i];
        float num = sh * s;
        float den0 = shm1 * s;
        float den = 1.0f + den0;
        sigmas[i] = num / den;
    }
    sigmas[steps] = 0.0f;

    float ntt = (float)c->num_train_timesteps;
    for (int i = 0; i < steps; i++) {
        float ts = sigmas[i] * ntt;           /* timesteps = sigmas * num_train_timesteps */
        if (timesteps) timesteps[i] = ts;
        if (t_in) {
            float d = 1000.0f - ts;           /* timestep = (1000 - timestep) / 1000 */
            t_in[i] = d / 1000.0f;
        }
    }
    return ZE_OK;
}

void zsched_t_in_cuda(const float *timesteps, int steps, float *t_in) {
    const float inv = 1.0f / 1000.0f;
    for (int i = 0; i < steps; i++) {
        float d = 1000.0f - timesteps[i];
        t_in[i] = d * inv;
    }
}

void zsched_step(float *x, const float *v, size_t n, const float *sigmas, int i) {
    float dt = sigmas[i + 1] - sigmas[i];
    for (size_t k = 0; k < n; k++) {
        float d = dt * v[k];
        x[k] = x[k] + d;
    }
}
