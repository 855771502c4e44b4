/* Element-wise step kernels of the fused recurrent scans, for float32 on CPU.
 *
 * A scan step on a (rows, H) tile is one matmul (torch, BLAS) and a handful of element-wise
 * operations. As torch kernels each element-wise operation costs a few microseconds of dispatch,
 * several times its arithmetic; here they are one call per step. Built and loaded by
 * pipeline/native.py (plain C, no torch headers); every function has a torch twin in
 * pipeline/fused_gated.py that defines what it must compute, and the tests compare the two.
 *
 * Compiled without -ffast-math: NaN and infinities propagate as in torch (a diverging trial must
 * show up as NaN). Float-to-int conversion in fexp needs -fno-trapping-math to vectorise.
 */
#include <stdint.h>
#include <string.h>

#define EXP_HI 88.3762626647949f
#define EXP_LO (-87.3365478515625f)

/* e^x in float32 (Cephes' expf: range reduction by ln 2, degree-6 polynomial), about 1 ulp.
 * Saturates like expf at the float range; a NaN input propagates through the polynomial. */
static inline float fexp(float x) {
    x = x > EXP_HI ? EXP_HI : x;
    x = x < EXP_LO ? EXP_LO : x;
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float r2 = r * r;
    float y = 1.9875691500E-4f;
    y = y * r + 1.3981999507E-3f;
    y = y * r + 8.3334519073E-3f;
    y = y * r + 4.1665795894E-2f;
    y = y * r + 1.6666665459E-1f;
    y = y * r + 5.0000001201E-1f;
    y = y * r2 + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, sizeof s);
    return y * s;
}

static inline float fsig(float x) { return 1.0f / (1.0f + fexp(-x)); }

/* tanh(x) = 2 sig(2x) - 1: absolute error ~1e-7 near 0, exact limits +-1. */
static inline float ftanh(float x) { return 2.0f / (1.0f + fexp(-2.0f * x)) - 1.0f; }

/* ---------------------------------------------------------------------------------------
 * LSTM, gate order (o, i, f, g); p rows are 4H wide, state rows H wide.
 * ------------------------------------------------------------------------------------- */

/* Forward step: p holds the pre-activations x_t + h_{t-1} w and is activated in place;
 * c = f cp + i g, tc = tanh(c), h = o tc. c may be cp (in place). */
void lstm_fwd(long rows, long H, float *restrict p, const float *cp, float *c, float *restrict tc,
              float *restrict h) {
    for (long b = 0; b < rows; b++) {
        float *restrict q = p + b * 4 * H;
        for (long j = 0; j < 3 * H; j++) q[j] = fsig(q[j]);
        for (long j = 3 * H; j < 4 * H; j++) q[j] = ftanh(q[j]);
        const float *cpb = cp + b * H;
        float *cb = c + b * H;
        float *restrict tb = tc + b * H;
        float *restrict hb = h + b * H;
        for (long j = 0; j < H; j++) {
            float cc = q[2 * H + j] * cpb[j] + q[H + j] * q[3 * H + j];
            float t = ftanh(cc);
            cb[j] = cc;
            tb[j] = t;
            hb[j] = q[j] * t;
        }
    }
}

/* Backward step. In: p the activated gates of the step (overwritten with dL/dp), tc = tanh(c_t),
 * cp = c_{t-1}, gh = dL/dh_t and gcn = dL/dc_t (totals from later steps and outputs),
 * gc = dL/dc_{t-1} so far (the incoming gradient of the previous output), accumulated into:
 *   dc = gcn + gh o (1 - tc^2)
 *   dp = [gh tc o (1 - o), dc g i (1 - i), dc cp f (1 - f), dc i (1 - g^2)]
 *   gc += dc f
 * dL/dh_{t-1} += dp w^T is the caller's matmul. */
void lstm_bwd(long rows, long H, float *restrict p, const float *restrict tc, const float *restrict cp,
              const float *restrict gh, const float *restrict gcn, float *restrict gc) {
    for (long b = 0; b < rows; b++) {
        float *restrict q = p + b * 4 * H;
        const long s = b * H;
        for (long j = 0; j < H; j++) {
            float o = q[j], i = q[H + j], f = q[2 * H + j], g = q[3 * H + j];
            float t = tc[s + j], dh = gh[s + j];
            float dc = gcn[s + j] + dh * o * (1.0f - t * t);
            q[j] = dh * t * o * (1.0f - o);
            q[H + j] = dc * g * i * (1.0f - i);
            q[2 * H + j] = dc * cp[s + j] * f * (1.0f - f);
            q[3 * H + j] = dc * i * (1.0f - g * g);
            gc[s + j] += dc * f;
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * GRU, gate order (r, z, n) as torch's; rows are grouped: G groups of B rows, row (g, b).
 * ------------------------------------------------------------------------------------- */

/* Forward step. In: a = h_{t-1} w (rows x 3H, the caller's matmul), x the input projections of
 * the step (row (g, b) at x + g xg + b xb; xb may be 0 for an input shared by the rows), bias the
 * recurrent biases (G x 3H), hp = h_{t-1}. Out: a = [x_rz + b_rz + a_rz, b_n + a_n] (the backward
 * reads its n block), rz = sig of its r, z blocks, n = tanh(x_n + r (b_n + a_n)),
 * h = (1 - z) n + z hp. h may be hp (in place). */
void gru_fwd(long G, long B, long H, const float *restrict x, long xg, long xb, const float *restrict bias,
             float *restrict a, float *restrict rz, float *restrict n, const float *hp, float *h) {
    for (long g = 0; g < G; g++) {
        const float *restrict bg = bias + g * 3 * H;
        for (long b = 0; b < B; b++) {
            const long row = g * B + b;
            const float *restrict xr = x + g * xg + b * xb;
            float *restrict ar = a + row * 3 * H;
            float *restrict rzr = rz + row * 2 * H;
            float *restrict nr = n + row * H;
            const float *hpr = hp + row * H;
            float *hr = h + row * H;
            for (long j = 0; j < 2 * H; j++) {
                float v = ar[j] + xr[j] + bg[j];
                ar[j] = v;
                rzr[j] = fsig(v);
            }
            for (long j = 0; j < H; j++) {
                float an = ar[2 * H + j] + bg[2 * H + j];
                ar[2 * H + j] = an;
                float nn = ftanh(xr[2 * H + j] + rzr[j] * an);
                float z = rzr[H + j];
                nr[j] = nn;
                hr[j] = nn + z * (hpr[j] - nn);
            }
        }
    }
}

/* Backward step. In: a, rz, n of the step as the forward left them, hp = h_{t-1}, gh = dL/dh_t
 * (total). With kn = (1 - z)(1 - n^2):
 *   a  <- dL/da = gh [a_n kn r (1 - r), (hp - n) z (1 - z), kn r]   (r, z blocks: also dL/dx_rz)
 *   n  <- dL/dx_n = gh kn
 *   gp += gh z                                  (gp = dL/dh_{t-1} so far)
 * dL/dh_{t-1} += dL/da w^T is the caller's matmul. */
void gru_bwd(long rows, long H, float *restrict a, const float *restrict rz, float *restrict n,
             const float *restrict hp, const float *restrict gh, float *restrict gp) {
    for (long row = 0; row < rows; row++) {
        float *restrict ar = a + row * 3 * H;
        const float *restrict rzr = rz + row * 2 * H;
        float *restrict nr = n + row * H;
        const long s = row * H;
        for (long j = 0; j < H; j++) {
            float r = rzr[j], z = rzr[H + j], nn = nr[j], g = gh[s + j];
            float kn = (1.0f - z) * (1.0f - nn * nn) * g;
            ar[j] = ar[2 * H + j] * kn * r * (1.0f - r);
            ar[H + j] = g * (hp[s + j] - nn) * z * (1.0f - z);
            ar[2 * H + j] = kn * r;
            nr[j] = kn;
            gp[s + j] += g * z;
        }
    }
}
