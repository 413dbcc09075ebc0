/* scheduler.h - FlowMatchEulerDiscreteScheduler as ZImagePipeline uses it
 * (diffusers 0.42.1), float32 bit for bit.
 *
 * For N steps (spec zimage-turbo.md 5.3; static shift, use_dynamic_shifting
 * false):
 *   s[i]        = torch.linspace(1, 1/N, N)[i]           (float32, see below)
 *   sigmas[i]   = shift*s / (1 + (shift-1)*s)            (numpy float32 ops)
 *   sigmas[N]   = 0                                      (terminal)
 *   timesteps[i]= sigmas[i] * 1000                       (num_train_timesteps)
 *   t_in[i]     = (1000 - timesteps[i]) / 1000           (what the DiT is fed)
 * and the Euler step x += (sigmas[i+1] - sigmas[i]) * v (float32, unfused).
 *
 * torch.linspace on x86-64 CPUs with AVX2/AVX-512 (every official wheel
 * there) is computed with FMA: s[i] = fma(step, i, 1) for i < N/2, else
 * fma(-step, N-1-i, end), step = (end - 1)/(N - 1), end = (float)(1.0/N).
 * (ATEN_CPU_CAPABILITY=default gives the unfused values; N = 9 and 50
 * differ there.)
 *
 * t_in is the CPU value (true division).  diffusers running on a CUDA
 * device computes (1000 - ts) * (1.0f/1000) instead (torch multiplies by the
 * reciprocal of a scalar divisor on CUDA); zsched_t_in_cuda gives that
 * variant (1 ulp apart in some entries, e.g. N = 8 steps 3 and 7).
 */
#ifndef ZIMAGE_SCHEDULER_H
#define ZIMAGE_SCHEDULER_H

#include <stddef.h>

#include "../base/err.h"
#include "../models/config.h"

#define ZSCHED_MAX_STEPS 10000

/* torch.linspace(start, end, n) in float32 as the AVX2/AVX-512 CPU kernel
 * computes it (start, end already rounded to float). */
void zsched_linspace(float start, float end, int n, float *out);

/* The schedule for `steps` (1..ZSCHED_MAX_STEPS) denoising steps.
 * sigmas: [steps+1] (terminal 0 included); timesteps: [steps] or NULL;
 * t_in: [steps] or NULL.  Errors: ZE_INVALID (steps out of range, bad
 * shift), ZE_UNSUPPORTED (use_dynamic_shifting). */
int zsched_sigmas(const sched_config *c, int steps, float *sigmas, float *t_in, float *timesteps, zerr *e);

/* t fed to the DiT as diffusers computes it on a CUDA device. */
void zsched_t_in_cuda(const float *timesteps, int steps, float *t_in);

/* One Euler step i: x[k] = x[k] + (sigmas[i+1] - sigmas[i]) * v[k], k < n
 * (v = the velocity, i.e. minus the DiT output after CFG). */
void zsched_step(float *x, const float *v, size_t n, const float *sigmas, int i);

#endif
