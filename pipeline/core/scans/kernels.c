/* Native scans of the recurrent cells (GRU, LSTM, MGU, BRC, nBRC), for float32 on CPU.
 *
 * A scan step on a (rows, H) tile is one small matmul and a handful of element-wise operations.
 * As torch kernels each element-wise operation costs a few microseconds of dispatch, several times
 * its arithmetic; here a scan's whole time loop, forward or backward, is one call. Built and loaded
 * by native.py beside this file (plain C, no torch headers), which declares every exported function
 * below by its parameter names (a test compares them with these prototypes). Every scan has a torch
 * twin in custom.py or standard.py, and a plain loop in reference.py, that define what it must
 * compute; the tests compare them.
 *
 * Compiled without -ffast-math: NaN and infinities propagate as in torch (a diverging trial must
 * show up as NaN). Float-to-int conversion in fexp needs -fno-trapping-math to vectorise.
 */
#include <pthread.h>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif
#include <stdint.h>
#include <stdlib.h>
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

/* tanh: Cephes' odd polynomial for |x| < 0.625 (relative accuracy near 0, where 2 sig(2x) - 1
 * would lose it to cancellation), 2 sig(2x) - 1 elsewhere; both computed, one selected, so that
 * the loops vectorise. Exact limits +-1; NaN propagates. */
static inline float ftanh(float x) {
    float z = x * x;
    float p = ((((-5.70498872745E-3f * z + 2.06390887954E-2f) * z - 5.37397155531E-2f) * z + 1.33314422036E-1f) * z
               - 3.33332819422E-1f) * z * x + x;
    float q = 2.0f / (1.0f + fexp(-2.0f * x)) - 1.0f;
    return (x < 0.625f && x > -0.625f) ? p : q;
}

/* ---------------------------------------------------------------------------------------
 * Small matrix products: C (m x n, row stride ldc) (+)= A (m x k, element (i, p) at
 * A[i ars + p acs]) W (k x n, row stride ldw). Register tiles of 4 rows x 16 columns, the 16
 * columns held in registers of the machine's own width (one AVX-512 register, two AVX ones, four
 * SSE/NEON ones: GCC spills a generic vector wider than the target's registers to memory, which
 * made the products 6x slower on AVX2); the remaining columns one at a time. Every element is
 * summed over p in the same order whatever the width, so results do not depend on it. On the
 * (32 x 64) x (64 x 256) products of a scan step this runs as fast as MKL does through torch,
 * without its dispatch.
 * ------------------------------------------------------------------------------------- */

#if defined(__AVX512F__)
#define VW 16
#elif defined(__AVX__)
#define VW 8
#else
#define VW 4
#endif
typedef float vf __attribute__((vector_size(VW * sizeof(float)), aligned(4)));
#define GEMM_COLS 16   /* tile columns */
#define NV (GEMM_COLS / VW) /* registers per tile row */
#define TR 4           /* tile rows */
/* Keeps a loaded vector in a register: GCC would otherwise fold the load into each of the TR
 * multiply-adds that use it, loading it TR times (the loads then bound the product on AVX2). */
#if defined(__GNUC__) && defined(__x86_64__)
#define REG(v) __asm__("" : "+x"(v))
#elif defined(__GNUC__) && defined(__aarch64__)
#define REG(v) __asm__("" : "+w"(v))
#else
#define REG(v) ((void)0)
#endif

static void gemm(long m, long n, long k, const float *A, long ars, long acs, const float *W, long ldw,
                 float *C, long ldc, int beta) {
    const long nb = n - n % GEMM_COLS, mb = m - m % TR;
    for (long i = 0; i < mb; i += TR)
        for (long j = 0; j < nb; j += GEMM_COLS) {
            vf c[TR][NV];
            for (int r = 0; r < TR; r++)
                for (int v = 0; v < NV; v++)
                    c[r][v] = beta ? *(const vf *)(C + (i + r) * ldc + j + v * VW) : (vf){0};
            for (long p = 0; p < k; p++) {
                vf w[NV];
                for (int v = 0; v < NV; v++) {
                    w[v] = *(const vf *)(W + p * ldw + j + v * VW);
                    REG(w[v]);
                }
                for (int r = 0; r < TR; r++) {
                    const float a = A[(i + r) * ars + p * acs];
                    for (int v = 0; v < NV; v++) c[r][v] += a * w[v];
                }
            }
            for (int r = 0; r < TR; r++)
                for (int v = 0; v < NV; v++) *(vf *)(C + (i + r) * ldc + j + v * VW) = c[r][v];
        }
    for (long i = 0; i < m; i++)
        for (long j = i < mb ? nb : 0; j < n; j++) {
            float s = beta ? C[i * ldc + j] : 0.0f;
            for (long p = 0; p < k; p++) s += A[i * ars + p * acs] * W[p * ldw + j];
            C[i * ldc + j] = s;
        }
}

/* Run work(arg, g) for g = 0..G-1 on up to `threads` threads (g: a lane, see "Whole scans"; lanes
 * are independent over the whole sequence, so there is no synchronisation per step). */
typedef void (*group_fn)(const void *arg, long g);

/* The caller's floating-point control word (x86 MXCSR, AArch64 FPCR), set on every thread that
 * runs a lane: with flush-to-zero on the caller (torch.set_flush_denormal, pipeline/core/device.py),
 * the lanes flush too. Threads of a pool started before the caller set it would keep the old
 * mode, and one lane computing with subnormals runs many times slower than the others. */
#if defined(__SSE__) || defined(__x86_64__)
typedef unsigned int fpmode;
static inline fpmode get_fpmode(void) { return _mm_getcsr(); }
static inline void set_fpmode(fpmode m) { if (_mm_getcsr() != m) _mm_setcsr(m); }
#elif defined(__aarch64__)
typedef unsigned long fpmode;
static inline fpmode get_fpmode(void) { fpmode m; __asm__ volatile("mrs %0, fpcr" : "=r"(m)); return m; }
static inline void set_fpmode(fpmode m) { if (get_fpmode() != m) __asm__ volatile("msr fpcr, %0" : : "r"(m)); }
#else
typedef int fpmode;
static inline fpmode get_fpmode(void) { return 0; }
static inline void set_fpmode(fpmode m) { (void)m; }
#endif

struct share { group_fn fn; const void *arg; long first, G, stride; fpmode mode; };

static void *run_share(void *p) {
    const struct share *s = p;
    set_fpmode(s->mode);
    for (long g = s->first; g < s->G; g += s->stride) s->fn(s->arg, g);
    return NULL;
}

static void for_groups(group_fn fn, const void *arg, long G, long threads) {
    if (threads > G) threads = G;
    const fpmode mode = get_fpmode();
#ifdef _OPENMP
    /* torch's own OpenMP runtime (the same libgomp is loaded once per process) and its threads:
     * fresh threads would compete with torch's, which spin for a while after each of its ops */
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
        {
            set_fpmode(mode);
#pragma omp for schedule(static, 1)
            for (long g = 0; g < G; g++) fn(arg, g);
        }
        return;
    }
#endif
    if (threads > 64) threads = 64;
    if (threads <= 1) {
        for (long g = 0; g < G; g++) fn(arg, g);
        return;
    }
    pthread_t ids[64];
    struct share shares[64];
    long started = 0;
    for (long k = 1; k < threads; k++) {
        shares[k] = (struct share){fn, arg, k, G, threads, mode};
        if (pthread_create(&ids[k], NULL, run_share, &shares[k]) != 0) break;
        started = k;
    }
    /* groups of threads that could not start run here */
    shares[0] = (struct share){fn, arg, 0, G, threads, mode};
    run_share(&shares[0]);
    for (long k = started + 1; k < threads; k++) {
        struct share rest = {fn, arg, k, G, threads, mode};
        run_share(&rest);
    }
    for (long k = 1; k <= started; k++) pthread_join(ids[k], NULL);
}

/* ---------------------------------------------------------------------------------------
 * LSTM, torch's gate order (i, f, g, o); p rows are 4H wide, state rows H wide.
 * ------------------------------------------------------------------------------------- */

/* Forward step: p holds the pre-activations x_t + h_{t-1} w and is activated in place;
 * c = f cp + i g, tc = tanh(c), h = o tc. c may be cp (in place). */
static void lstm_fwd(long rows, long H, float *restrict p, const float *cp, float *c, float *restrict tc,
                     float *restrict h) {
    for (long b = 0; b < rows; b++) {
        float *restrict q = p + b * 4 * H;
        for (long j = 0; j < 2 * H; j++) q[j] = fsig(q[j]);
        for (long j = 2 * H; j < 3 * H; j++) q[j] = ftanh(q[j]);
        for (long j = 3 * H; j < 4 * H; j++) q[j] = fsig(q[j]);
        const float *cpb = cp + b * H;
        float *cb = c + b * H;
        float *restrict tb = tc + b * H;
        float *restrict hb = h + b * H;
        for (long j = 0; j < H; j++) {
            float cc = q[H + j] * cpb[j] + q[j] * q[2 * H + j];
            float t = ftanh(cc);
            cb[j] = cc;
            tb[j] = t;
            hb[j] = q[3 * H + j] * t;
        }
    }
}

/* Backward step. In: p the activated gates of the step (overwritten with dL/dp), tc = tanh(c_t),
 * cp = c_{t-1}, gh = dL/dh_t and gcn = dL/dc_t (totals from later steps and outputs),
 * gc = dL/dc_{t-1} so far (the incoming gradient of the previous output), accumulated into:
 *   dc = gcn + gh o (1 - tc^2)
 *   dp = [dc g i (1 - i), dc cp f (1 - f), dc i (1 - g^2), gh tc o (1 - o)]
 *   gc += dc f
 * dL/dh_{t-1} += dp w^T is the caller's matmul. */
static void lstm_bwd_row(long H, float *restrict qi, float *restrict qf, float *restrict qg, float *restrict qo,
                         const float *restrict tc, const float *restrict cp, const float *restrict gh,
                         const float *restrict gcn, float *restrict gc) {
    for (long j = 0; j < H; j++) {
        float i = qi[j], f = qf[j], g = qg[j], o = qo[j], t = tc[j], dh = gh[j];
        float dc = gcn[j] + dh * o * (1.0f - t * t);
        qi[j] = dc * g * i * (1.0f - i);
        qf[j] = dc * cp[j] * f * (1.0f - f);
        qg[j] = dc * i * (1.0f - g * g);
        qo[j] = dh * t * o * (1.0f - o);
        gc[j] += dc * f;
    }
}

static void lstm_bwd(long rows, long H, float *p, const float *tc, const float *cp, const float *gh,
                     const float *gcn, float *gc) {
    for (long b = 0; b < rows; b++) {
        float *q = p + b * 4 * H;
        const long s = b * H;
        lstm_bwd_row(H, q, q + H, q + 2 * H, q + 3 * H, tc + s, cp + s, gh + s, gcn + s, gc + s);
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
static void gru_fwd(long G, long B, long H, const float *restrict x, long xg, long xb, const float *restrict bias,
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
static void gru_bwd_row(long H, float *restrict ar, float *restrict az, float *restrict an,
                        const float *restrict r_, const float *restrict z_, float *restrict n_,
                        const float *restrict hp, const float *restrict gh, float *restrict gp) {
    for (long j = 0; j < H; j++) {
        float r = r_[j], z = z_[j], nn = n_[j], g = gh[j];
        float kn = (1.0f - z) * (1.0f - nn * nn) * g;
        ar[j] = an[j] * kn * r * (1.0f - r);
        az[j] = g * (hp[j] - nn) * z * (1.0f - z);
        an[j] = kn * r;
        n_[j] = kn;
        gp[j] += g * z;
    }
}

static void gru_bwd(long rows, long H, float *a, const float *rz, float *n, const float *hp, const float *gh,
                    float *gp) {
    for (long row = 0; row < rows; row++) {
        float *ar = a + row * 3 * H;
        const float *rzr = rz + row * 2 * H;
        const long s = row * H;
        gru_bwd_row(H, ar, ar + H, ar + 2 * H, rzr, rzr + H, n + s, hp + s, gh + s, gp + s);
    }
}

/* ---------------------------------------------------------------------------------------
 * Whole scans: the time loop, matmuls included, in one call. Buffers are step-major as in
 * pipeline/core/scans/standard.py: per-step buffers (steps, G, B, k H) with steps = T (kept for the
 * backward) or 1 (forward only), states (slots, G, B, H) with slots = T, or 2 (or 1) alternating
 * when only the last state is wanted, gradient buffers (T + 1, G, B, H), index 0 for the initial
 * state. x (row (t, g, b) at x + t xt + g xg + b xb) may be expanded (strides 0).
 *
 * Every row (g, b) of a scan is independent of the others over the whole sequence: row b of
 * h_t @ w needs only row b of h_t. So the work is cut into lanes, one block of rows of one group
 * each, spread over the threads with no synchronisation per step; only the weight gradient (a
 * sum over rows) is accumulated per lane and added up at the end.
 * ------------------------------------------------------------------------------------- */

/* The weight gradients of a backward scan, each a sum over the rows of a group: `parts` of them
 * (one matrix; MGU: gUf and gUn; BRC: gwc and gwa), n floats a group, part p of group g at
 * dst[p] + g group_stride, zeroed by the caller (dst[0] NULL: not wanted). A group that is one
 * lane (split == 1) accumulates straight into its own. A group cut into several lanes has every
 * lane accumulate into its own slice of scratch, (lanes, parts, n), and the slices are added into
 * dst in lane order at the end (run_lanes): no two threads write the same floats, and the sums do
 * not depend on the thread count. */
#define MAX_PARTS 2
struct lane_sums {
    long parts, n, group_stride, split; /* split: lanes per group (lanes_for) */
    float *dst[MAX_PARTS], *scratch;
};

struct scan {
    long T, G, B, H, keep, slots, split;
    const float *x;
    long xt, xg, xb;
    const float *w, *bias, *h0, *c0, *hs_in, *cs_in;
    float *P, *TC, *N, *hs, *cs, *GH, *GC;
    struct lane_sums dw; /* backward: the weight gradient (G, H, k H) */
};

/* lane -> group g, first row b0 within the group and row count nb, for groups of Bg rows cut
 * into `split` lanes each (lanes_for) */
static inline void lane_block(long Bg, long split, long lane, long *g, long *b0, long *nb) {
    const long per = (Bg + split - 1) / split;
    *g = lane / split;
    *b0 = (lane % split) * per;
    *nb = *b0 >= Bg ? 0 : (Bg - *b0 < per ? Bg - *b0 : per);
}

static inline void lane_rows(const struct scan *a, long lane, long *g, long *b0, long *nb) {
    lane_block(a->B, a->split, lane, g, b0, nb);
}

/* offset of row (g, b) of slot/step s in a (., G, B, w) buffer */
static inline long at(const struct scan *a, long s, long g, long b, long w) {
    return ((s * a->G + g) * a->B + b) * w;
}

/* Lanes of a group: blocks of about LANE_ROWS rows. The cut depends on the batch only, never on
 * the thread count, and lanes' partial weight gradients are added in lane order: results are the
 * same bit for bit on any number of threads, and for a cell run alone or grouped with others. */
#ifndef LANE_ROWS
#define LANE_ROWS 8
#endif

static long lanes_for(long G, long B, long *split) {
    const long sp = (B + LANE_ROWS - 1) / LANE_ROWS;
    *split = sp > 1 ? sp : 1;
    return G * *split;
}

/* Where lane `lane` accumulates part p of its weight gradient (n floats); NULL if not wanted. */
static inline float *lane_sum(const struct lane_sums *s, long lane, long p) {
    if (!s->dst[0]) return NULL;
    return s->split == 1 ? s->dst[p] + lane * s->group_stride /* the lane is its group */
                         : s->scratch + (lane * s->parts + p) * s->n;
}

static void add_to(long n, float *restrict dst, const float *restrict src) {
    for (long i = 0; i < n; i++) dst[i] += src[i];
}

/* Runs fn(arg, lane) over the lanes, whose weight gradients s (within arg) describes: allocates
 * the zeroed scratch first when a group has several lanes, then adds each lane's partial sums
 * into its group's, in lane order, and frees it. Returns 0, or -1 (nothing run) when the scratch
 * could not be allocated. */
static long run_lanes(group_fn fn, const void *arg, long lanes, long threads, struct lane_sums *s) {
    const int scratch = s->dst[0] && s->split > 1;
    if (scratch && !(s->scratch = calloc(lanes * s->parts * s->n, sizeof(float)))) return -1;
    for_groups(fn, arg, lanes, threads);
    if (scratch) {
        for (long lane = 0; lane < lanes; lane++)
            for (long p = 0; p < s->parts; p++)
                add_to(s->n, s->dst[p] + (lane / s->split) * s->group_stride,
                       s->scratch + (lane * s->parts + p) * s->n);
        free(s->scratch);
        s->scratch = NULL;
    }
    return 0;
}

static void lstm_fwd_lane(const void *arg, long lane) {
    const struct scan *a = arg;
    long g, b0, nb;
    lane_rows(a, lane, &g, &b0, &nb);
    const long H = a->H;
    const float *wg = a->w + g * H * 4 * H;
    for (long t = 0; t < a->T; t++) {
        const long k = a->keep ? t : 0, s = t % a->slots, sp = (t - 1) % a->slots;
        float *p = a->P + at(a, k, g, b0, 4 * H);
        const float *hp = t ? a->hs + at(a, sp, g, b0, H) : a->h0 + (g * a->B + b0) * H;
        const float *cp = t ? a->cs + at(a, sp, g, b0, H) : a->c0 + (g * a->B + b0) * H;
        const float *xr = a->x + t * a->xt + g * a->xg + b0 * a->xb;
        for (long b = 0; b < nb; b++) memcpy(p + b * 4 * H, xr + b * a->xb, 4 * H * sizeof(float));
        gemm(nb, 4 * H, H, hp, H, 1, wg, 4 * H, p, 4 * H, 1);
        lstm_fwd(nb, H, p, cp, a->cs + at(a, s, g, b0, H), a->TC + at(a, k, g, b0, H),
                 a->hs + at(a, s, g, b0, H));
    }
}

void lstm_fwd_scan(long T, long G, long B, long H, const float *x, long xt, long xg, long xb, const float *w,
                   const float *h0, const float *c0, float *P, float *TC, long keep, float *hs, float *cs,
                   long slots, long threads) {
    struct scan a = {.T = T, .G = G, .B = B, .H = H, .keep = keep, .slots = slots, .x = x, .xt = xt,
                     .xg = xg, .xb = xb, .w = w, .h0 = h0, .c0 = c0, .P = P, .TC = TC, .hs = hs, .cs = cs};
    const long lanes = lanes_for(G, B, &a.split);
    for_groups(lstm_fwd_lane, &a, lanes, threads);
}

static void lstm_bwd_lane(const void *arg, long lane) {
    const struct scan *a = arg;
    long g, b0, nb;
    lane_rows(a, lane, &g, &b0, &nb);
    const long H = a->H, GBH = a->G * a->B * H;
    const float *wTg = a->w + g * 4 * H * H;
    float *dwg = lane_sum(&a->dw, lane, 0);
    for (long t = a->T - 1; t >= 0; t--) {
        float *p = a->P + at(a, t, g, b0, 4 * H);
        const float *tc = a->TC + at(a, t, g, b0, H);
        const float *cp = t ? a->cs_in + at(a, t - 1, g, b0, H) : a->c0 + (g * a->B + b0) * H;
        const float *hp = t ? a->hs_in + at(a, t - 1, g, b0, H) : a->h0 + (g * a->B + b0) * H;
        float *gh = a->GH + at(a, t + 1, g, b0, H), *gc = a->GC + at(a, t + 1, g, b0, H);
        lstm_bwd(nb, H, p, tc, cp, gh, gc, gc - GBH);
        gemm(nb, H, 4 * H, p, 4 * H, 1, wTg, H, gh - GBH, H, 1);
        if (dwg) gemm(H, 4 * H, nb, hp, 1, H, p, 4 * H, dwg, 4 * H, 1);
    }
}

/* P: the activated gates (becomes dL/dp), wT: (G, 4H, H), GH/GC hold the incoming gradients
 * (index t + 1 for step t) and receive the initial states' at index 0; dw (G, H, 4H), zeroed by
 * the caller, or NULL. Returns 0, or -1 if scratch memory for the weight gradient is short. */
long lstm_bwd_scan(long T, long G, long B, long H, float *P, const float *TC, const float *hs, const float *cs,
                   const float *h0, const float *c0, const float *wT, float *GH, float *GC, float *dw,
                   long threads) {
    struct scan a = {.T = T, .G = G, .B = B, .H = H, .keep = 1, .slots = T, .w = wT, .h0 = h0, .c0 = c0,
                     .hs_in = hs, .cs_in = cs, .P = P, .TC = (float *)TC, .GH = GH, .GC = GC,
                     .dw = {.parts = 1, .n = H * 4 * H, .group_stride = H * 4 * H, .dst = {dw}}};
    const long lanes = lanes_for(G, B, &a.split);
    a.dw.split = a.split;
    return run_lanes(lstm_bwd_lane, &a, lanes, threads, &a.dw);
}

static void gru_fwd_lane(const void *arg, long lane) {
    const struct scan *a = arg;
    long g, b0, nb;
    lane_rows(a, lane, &g, &b0, &nb);
    const long H = a->H;
    const float *wg = a->w + g * H * 3 * H;
    for (long t = 0; t < a->T; t++) {
        const long k = a->keep ? t : 0, s = t % a->slots;
        float *ar = a->P + at(a, k, g, b0, 3 * H);
        const float *hp = t ? a->hs + at(a, (t - 1) % a->slots, g, b0, H) : a->h0 + (g * a->B + b0) * H;
        gemm(nb, 3 * H, H, hp, H, 1, wg, 3 * H, ar, 3 * H, 0);
        gru_fwd(1, nb, H, a->x + t * a->xt + g * a->xg + b0 * a->xb, 0, a->xb, a->bias + g * 3 * H, ar,
                a->TC + at(a, k, g, b0, 2 * H), a->N + at(a, k, g, b0, H), hp, a->hs + at(a, s, g, b0, H));
    }
}

/* A (steps, G, B, 3H), RZ (steps, G, B, 2H), N (steps, G, B, H): as gru_fwd leaves them. */
void gru_fwd_scan(long T, long G, long B, long H, const float *x, long xt, long xg, long xb, const float *w,
                  const float *bias, const float *h0, float *A, float *RZ, float *N, long keep, float *hs,
                  long slots, long threads) {
    struct scan a = {.T = T, .G = G, .B = B, .H = H, .keep = keep, .slots = slots, .x = x, .xt = xt,
                     .xg = xg, .xb = xb, .w = w, .bias = bias, .h0 = h0, .P = A, .TC = RZ, .N = N, .hs = hs};
    const long lanes = lanes_for(G, B, &a.split);
    for_groups(gru_fwd_lane, &a, lanes, threads);
}

static void gru_bwd_lane(const void *arg, long lane) {
    const struct scan *a = arg;
    long g, b0, nb;
    lane_rows(a, lane, &g, &b0, &nb);
    const long H = a->H, GBH = a->G * a->B * H;
    const float *wTg = a->w + g * 3 * H * H;
    float *dwg = lane_sum(&a->dw, lane, 0);
    for (long t = a->T - 1; t >= 0; t--) {
        float *ar = a->P + at(a, t, g, b0, 3 * H);
        const float *hp = t ? a->hs_in + at(a, t - 1, g, b0, H) : a->h0 + (g * a->B + b0) * H;
        float *gh = a->GH + at(a, t + 1, g, b0, H);
        gru_bwd(nb, H, ar, a->TC + at(a, t, g, b0, 2 * H), a->N + at(a, t, g, b0, H), hp, gh, gh - GBH);
        gemm(nb, H, 3 * H, ar, 3 * H, 1, wTg, H, gh - GBH, H, 1);
        if (dwg) gemm(H, 3 * H, nb, hp, 1, H, ar, 3 * H, dwg, 3 * H, 1);
    }
}

/* A becomes dL/da, N the n block of x's gradient (dL/dx_n); wT (G, 3H, H); GH as for the LSTM;
 * dw (G, H, 3H), zeroed by the caller, or NULL. Returns 0, or -1 (as lstm_bwd_scan). */
long gru_bwd_scan(long T, long G, long B, long H, float *A, const float *RZ, float *N, const float *hs,
                  const float *h0, const float *wT, float *GH, float *dw, long threads) {
    struct scan a = {.T = T, .G = G, .B = B, .H = H, .keep = 1, .slots = T, .w = wT, .h0 = h0, .hs_in = hs,
                     .P = A, .TC = (float *)RZ, .N = N, .GH = GH,
                     .dw = {.parts = 1, .n = H * 3 * H, .group_stride = H * 3 * H, .dst = {dw}}};
    const long lanes = lanes_for(G, B, &a.split);
    a.dw.split = a.split;
    return run_lanes(gru_bwd_lane, &a, lanes, threads, &a.dw);
}

/* ---------------------------------------------------------------------------------------
 * BRC: c = sig(zc), zc = xc + wc h; a = 1 + tanh(za) = 2 sig(2 za), za = xa + wa h;
 * h' = c h + (1 - c) n, n = tanh(xh + a h). Element-wise: every (row, unit) is its own scan, so
 * the rows split into lanes freely. Inputs (T, B, H) with their own time and row strides (0 when
 * expanded); weights (H,) shared (wb = 0) or one row per batch row (wb = H).
 * ------------------------------------------------------------------------------------- */

struct brc {
    long T, B, H, keep, slots, split;
    const float *xc, *xa, *xh;
    long xct, xcb, xat, xab, xht, xhb;
    const float *wc, *wa, *h0;
    long wb;
    float *S, *hs, *Gr;
    struct lane_sums dw; /* backward: gwc, gwa */
};

/* One row of one step; the gates are stored (c, a / 2, n at sc, sc + BH, sc + 2 BH) unless sc is NULL. */
static void brc_row(long H, long BH, const float *restrict xc, const float *restrict xa, const float *restrict xh,
                    const float *restrict wc, const float *restrict wa, const float *restrict hp,
                    float *restrict h, float *restrict sc) {
    if (sc) {
        float *restrict ss = sc + BH, *restrict sn = sc + 2 * BH;
        for (long j = 0; j < H; j++) {
            float hj = hp[j];
            float c = fsig(xc[j] + wc[j] * hj);
            float sa = fsig(2.0f * (xa[j] + wa[j] * hj));
            float n = ftanh(xh[j] + 2.0f * sa * hj);
            h[j] = n + c * (hj - n);
            sc[j] = c;
            ss[j] = sa;
            sn[j] = n;
        }
    } else {
        for (long j = 0; j < H; j++) {
            float hj = hp[j];
            float c = fsig(xc[j] + wc[j] * hj);
            float n = ftanh(xh[j] + 2.0f * fsig(2.0f * (xa[j] + wa[j] * hj)) * hj);
            h[j] = n + c * (hj - n);
        }
    }
}

static void brc_fwd_lane(const void *arg, long lane) {
    const struct brc *a = arg;
    long g, b0, nb;
    lane_block(a->B, a->split, lane, &g, &b0, &nb);
    const long b1 = b0 + nb, H = a->H, BH = a->B * H;
    for (long t = 0; t < a->T; t++) {
        const long k = a->keep ? t : 0, s = t % a->slots;
        float *S = a->S ? a->S + k * 3 * BH : NULL;
        for (long b = b0; b < b1; b++) {
            const float *hp = t ? a->hs + ((t - 1) % a->slots) * BH + b * H : a->h0 + b * H;
            brc_row(H, BH, a->xc + t * a->xct + b * a->xcb, a->xa + t * a->xat + b * a->xab,
                    a->xh + t * a->xht + b * a->xhb, a->wc + b * a->wb, a->wa + b * a->wb, hp,
                    a->hs + s * BH + b * H, S ? S + b * H : NULL);
        }
    }
}

/* S (steps, 3, B, H) = [c, a / 2, n] of every step when keep, else NULL; hs (slots, B, H). */
void brc_fwd_scan(long T, long B, long H, const float *xc, long xct, long xcb, const float *xa, long xat,
                  long xab, const float *xh, long xht, long xhb, const float *wc, const float *wa, long wb,
                  const float *h0, float *S, long keep, float *hs, long slots, long threads) {
    struct brc a = {.T = T, .B = B, .H = H, .keep = keep, .slots = slots, .xc = xc, .xa = xa, .xh = xh,
                    .xct = xct, .xcb = xcb, .xat = xat, .xab = xab, .xht = xht, .xhb = xhb, .wc = wc,
                    .wa = wa, .h0 = h0, .wb = wb, .S = S, .hs = hs};
    lanes_for(1, B, &a.split);
    for_groups(brc_fwd_lane, &a, a.split, threads);
}

/* Backward of one row of one step: the gates' buffers (c, a / 2, n) become dL/d(zc, za, zh);
 * gp (dL/dh_{t-1}, holding the previous output's incoming gradient) += k4 g, with g = dL/dh_t:
 *   k1 = (1 - n^2)(1 - c), k2 = (hp - n) c (1 - c), k3 = 4 s (1 - s) k1 hp   (s = a / 2)
 *   dzh = g k1, dzc = g k2, dza = g k3, k4 = c + 2 s k1 + wc k2 + wa k3
 * and the weights' gradients accumulate dzc hp and dza hp. */
static void brc_bwd_row(long H, long BH, float *restrict sc, const float *restrict hp, const float *restrict wc,
                        const float *restrict wa, const float *restrict g, float *restrict gp,
                        float *restrict gwc, float *restrict gwa) {
    float *restrict ss = sc + BH, *restrict sn = sc + 2 * BH;
    for (long j = 0; j < H; j++) {
        float c = sc[j], sa = ss[j], n = sn[j], h = hp[j], gj = g[j];
        float k1 = (1.0f - n * n) * (1.0f - c);
        float k2 = (h - n) * c * (1.0f - c);
        float k3 = 4.0f * sa * (1.0f - sa) * k1 * h;
        gp[j] += (c + 2.0f * sa * k1 + wc[j] * k2 + wa[j] * k3) * gj;
        float dzc = gj * k2, dza = gj * k3;
        sc[j] = dzc;
        ss[j] = dza;
        sn[j] = gj * k1;
        gwc[j] += dzc * h;
        gwa[j] += dza * h;
    }
}

static void brc_bwd_lane(const void *arg, long lane) {
    const struct brc *a = arg;
    long g, b0, nb;
    lane_block(a->B, a->split, lane, &g, &b0, &nb);
    const long b1 = b0 + nb, H = a->H, BH = a->B * H;
    float *gwc = lane_sum(&a->dw, lane, 0), *gwa = lane_sum(&a->dw, lane, 1); /* row b's at + b wb */
    for (long t = a->T - 1; t >= 0; t--)
        for (long b = b0; b < b1; b++) {
            const float *hp = t ? a->hs + (t - 1) * BH + b * H : a->h0 + b * H;
            const long w = b * a->wb;
            brc_bwd_row(H, BH, a->S + t * 3 * BH + b * H, hp, a->wc + w, a->wa + w, a->Gr + (t + 1) * BH + b * H,
                        a->Gr + t * BH + b * H, gwc + w, gwa + w);
        }
}

/* S (T, 3, B, H) as brc_fwd_scan kept it (becomes the inputs' gradients), hs (T, B, H), G (T + 1, B, H)
 * the incoming gradients (index t + 1 for step t; index 0 receives h0's), gwc/gwa zeroed by the
 * caller, shaped as the weights. Returns 0, or -1 if scratch memory is short. */
long brc_bwd_scan(long T, long B, long H, float *S, const float *hs, const float *h0, const float *wc,
                  const float *wa, long wb, float *G, float *gwc, float *gwa, long threads) {
    struct brc a = {.T = T, .B = B, .H = H, .keep = 1, .slots = T, .wc = wc, .wa = wa, .h0 = h0, .wb = wb,
                    .S = S, .hs = (float *)hs, .Gr = G, .dw = {.parts = 2, .n = H, .dst = {gwc, gwa}}};
    lanes_for(1, B, &a.split);
    /* Shared weights: one group, sums over all rows. Per-row weights: no sum over rows (row b's
     * gradient at + b wb is its own) and the lanes' rows are disjoint, so every lane accumulates
     * straight into gwc, gwa, as if a group of its own (split 1) at the same place (stride 0). */
    a.dw.split = wb ? 1 : a.split;
    return run_lanes(brc_bwd_lane, &a, a.split, threads, &a.dw);
}

/* ---------------------------------------------------------------------------------------
 * nBRC: as BRC with wc h -> h Wc^T and wa h -> h Wa^T, one (rows x H) x (H x 2H) product a
 * step. G groups of B/G consecutive rows, each with its own matrices (cells side by side).
 * Gates per row: S (steps, B, 3, H) = [c, a / 2, n]; the product lands in the c and a blocks.
 * ------------------------------------------------------------------------------------- */

struct nbrc {
    long T, B, H, G, keep, slots, split;
    const float *xc, *xa, *xh;
    long xct, xcb, xat, xab, xht, xhb;
    const float *W, *h0, *hs_in; /* forward: W2t (G, H, 2H); backward: W2 (G, 2H, H) */
    float *S, *hs, *Gr;
    struct lane_sums dw; /* backward: gw (G, 2H, H) */
};

/* lane -> rows [b0, b0 + nb) of the batch, in group g (B / G consecutive rows a group) */
static inline void block_rows(long B, long G, long split, long lane, long *g, long *b0, long *nb) {
    lane_block(B / G, split, lane, g, b0, nb);
    *b0 += *g * (B / G);
}

/* One row of one step: qc, qs hold the recurrent products (h Wc^T, h Wa^T) and become c, a / 2;
 * qn receives n. */
static void nbrc_fwd_row(long H, const float *restrict xc, const float *restrict xa, const float *restrict xh,
                         const float *restrict hp, float *restrict qc, float *restrict qs, float *restrict qn,
                         float *restrict h) {
    for (long j = 0; j < H; j++) {
        float hj = hp[j];
        float c = fsig(xc[j] + qc[j]);
        float sa = fsig(2.0f * (xa[j] + qs[j]));
        float n = ftanh(xh[j] + 2.0f * sa * hj);
        h[j] = n + c * (hj - n);
        qc[j] = c;
        qs[j] = sa;
        qn[j] = n;
    }
}

/* Backward of one row of one step: c, a / 2, n become dL/d(zc, za, zh); gp += (c + 2 s k1) g. */
static void nbrc_bwd_row(long H, float *restrict qc, float *restrict qs, float *restrict qn,
                         const float *restrict hp, const float *restrict g, float *restrict gp) {
    for (long j = 0; j < H; j++) {
        float c = qc[j], sa = qs[j], n = qn[j], h = hp[j], gj = g[j];
        float k1 = (1.0f - n * n) * (1.0f - c);
        gp[j] += (c + 2.0f * sa * k1) * gj;
        qc[j] = gj * (h - n) * c * (1.0f - c);
        qs[j] = gj * 4.0f * sa * (1.0f - sa) * k1 * h;
        qn[j] = gj * k1;
    }
}

static void nbrc_fwd_lane(const void *arg, long lane) {
    const struct nbrc *a = arg;
    long g, b0, nb;
    block_rows(a->B, a->G, a->split, lane, &g, &b0, &nb);
    const long H = a->H, BH = a->B * H;
    for (long t = 0; t < a->T; t++) {
        const long k = a->keep ? t : 0, s = t % a->slots;
        float *S = a->S + (k * a->B + b0) * 3 * H;
        const float *hp = t ? a->hs + ((t - 1) % a->slots) * BH + b0 * H : a->h0 + b0 * H;
        float *h = a->hs + s * BH + b0 * H;
        gemm(nb, 2 * H, H, hp, H, 1, a->W + g * H * 2 * H, 2 * H, S, 3 * H, 0);
        for (long r = 0; r < nb; r++) {
            const long b = b0 + r;
            float *q = S + r * 3 * H;
            nbrc_fwd_row(H, a->xc + t * a->xct + b * a->xcb, a->xa + t * a->xat + b * a->xab,
                         a->xh + t * a->xht + b * a->xhb, hp + r * H, q, q + H, q + 2 * H, h + r * H);
        }
    }
}

/* S (steps, B, 3, H) gates (steps = T when keep, else 1: scratch); hs (slots, B, H); W2t (G, H, 2H). */
void nbrc_fwd_scan(long T, long B, long H, long G, const float *xc, long xct, long xcb, const float *xa, long xat,
                   long xab, const float *xh, long xht, long xhb, const float *W2t, const float *h0, float *S,
                   long keep, float *hs, long slots, long threads) {
    struct nbrc a = {.T = T, .B = B, .H = H, .G = G, .keep = keep, .slots = slots, .xc = xc, .xa = xa, .xh = xh,
                     .xct = xct, .xcb = xcb, .xat = xat, .xab = xab, .xht = xht, .xhb = xhb, .W = W2t, .h0 = h0,
                     .S = S, .hs = hs};
    const long lanes = lanes_for(G, B / G, &a.split);
    for_groups(nbrc_fwd_lane, &a, lanes, threads);
}

static void nbrc_bwd_lane(const void *arg, long lane) {
    const struct nbrc *a = arg;
    long g, b0, nb;
    block_rows(a->B, a->G, a->split, lane, &g, &b0, &nb);
    const long H = a->H, BH = a->B * H;
    const float *W2 = a->W + g * 2 * H * H;
    float *gw = lane_sum(&a->dw, lane, 0);
    for (long t = a->T - 1; t >= 0; t--) {
        float *S = a->S + (t * a->B + b0) * 3 * H;
        const float *hp = t ? a->hs_in + (t - 1) * BH + b0 * H : a->h0 + b0 * H;
        const float *gn = a->Gr + (t + 1) * BH + b0 * H;
        float *gp = a->Gr + t * BH + b0 * H;
        for (long r = 0; r < nb; r++) {
            float *q = S + r * 3 * H;
            nbrc_bwd_row(H, q, q + H, q + 2 * H, hp + r * H, gn + r * H, gp + r * H);
        }
        gemm(nb, H, 2 * H, S, 3 * H, 1, W2, H, gp, H, 1);             /* gp += [dzc, dza] [Wc; Wa] */
        if (gw) gemm(2 * H, H, nb, S, 1, 3 * H, hp, H, gw, H, 1);     /* gW += [dzc, dza]^T hp */
    }
}

/* S as kept by the forward (becomes dL/d(zc, za, zh)); G (T + 1, B, H) as for the other scans;
 * W2 (G, 2H, H) = [Wc; Wa]; gw (G, 2H, H) zeroed by the caller, or NULL. Returns 0, or -1. */
long nbrc_bwd_scan(long T, long B, long H, long G, float *S, const float *hs, const float *h0, const float *W2,
                   float *Gr, float *gw, long threads) {
    struct nbrc a = {.T = T, .B = B, .H = H, .G = G, .keep = 1, .slots = T, .W = W2, .h0 = h0, .hs_in = hs,
                     .S = S, .Gr = Gr,
                     .dw = {.parts = 1, .n = 2 * H * H, .group_stride = 2 * H * H, .dst = {gw}}};
    const long lanes = lanes_for(G, B / G, &a.split);
    a.dw.split = a.split;
    return run_lanes(nbrc_bwd_lane, &a, lanes, threads, &a.dw);
}

/* ---------------------------------------------------------------------------------------
 * MGU: f = sig(xf + h Uf^T); n = tanh(xn + (f h) Un^T); h' = (1 - f) h + f n. Two dependent
 * (rows x H) x (H x H) products a step. G groups of B/G consecutive rows, each with its own
 * matrices. Buffers (steps, B, H): F = f, R = f h_{t-1}, N = n.
 * ------------------------------------------------------------------------------------- */

struct mgu {
    long T, B, H, G, keep, slots, split;
    const float *xf, *xn;
    long xft, xfb, xnt, xnb;
    const float *Uf, *Un, *h0; /* forward: transposed (G, H, H); backward: as they are */
    float *F, *R, *N, *hs, *DZF, *Gr, *E;
    struct lane_sums dw; /* backward: gUf, gUn (G, H, H) */
};

static void mgu_gate_row(long H, const float *restrict xf, const float *restrict hp, float *restrict f,
                         float *restrict r) {
    for (long j = 0; j < H; j++) {
        float fj = fsig(xf[j] + f[j]);
        f[j] = fj;
        r[j] = fj * hp[j];
    }
}

static void mgu_out_row(long H, const float *restrict xn, const float *restrict hp, const float *restrict f,
                        float *restrict n, float *restrict h) {
    for (long j = 0; j < H; j++) {
        float nj = ftanh(xn[j] + n[j]);
        n[j] = nj;
        h[j] = hp[j] + f[j] * (nj - hp[j]);
    }
}

static void mgu_fwd_lane(const void *arg, long lane) {
    const struct mgu *a = arg;
    long g, b0, nb;
    block_rows(a->B, a->G, a->split, lane, &g, &b0, &nb);
    const long H = a->H, BH = a->B * H;
    const float *UfT = a->Uf + g * H * H, *UnT = a->Un + g * H * H;
    for (long t = 0; t < a->T; t++) {
        const long k = a->keep ? t : 0, s = t % a->slots, o = k * BH + b0 * H;
        const float *hp = t ? a->hs + ((t - 1) % a->slots) * BH + b0 * H : a->h0 + b0 * H;
        float *h = a->hs + s * BH + b0 * H;
        gemm(nb, H, H, hp, H, 1, UfT, H, a->F + o, H, 0);
        for (long r = 0; r < nb; r++)
            mgu_gate_row(H, a->xf + t * a->xft + (b0 + r) * a->xfb, hp + r * H, a->F + o + r * H, a->R + o + r * H);
        gemm(nb, H, H, a->R + o, H, 1, UnT, H, a->N + o, H, 0);
        for (long r = 0; r < nb; r++)
            mgu_out_row(H, a->xn + t * a->xnt + (b0 + r) * a->xnb, hp + r * H, a->F + o + r * H, a->N + o + r * H,
                        h + r * H);
    }
}

/* F, R, N (steps, B, H) (steps = T when keep, else 1: scratch); hs (slots, B, H); UfT, UnT (G, H, H). */
void mgu_fwd_scan(long T, long B, long H, long G, const float *xf, long xft, long xfb, const float *xn, long xnt,
                  long xnb, const float *UfT, const float *UnT, const float *h0, float *F, float *R, float *N,
                  long keep, float *hs, long slots, long threads) {
    struct mgu a = {.T = T, .B = B, .H = H, .G = G, .keep = keep, .slots = slots, .xf = xf, .xn = xn, .xft = xft,
                    .xfb = xfb, .xnt = xnt, .xnb = xnb, .Uf = UfT, .Un = UnT, .h0 = h0, .F = F, .R = R, .N = N,
                    .hs = hs};
    const long lanes = lanes_for(G, B / G, &a.split);
    for_groups(mgu_fwd_lane, &a, lanes, threads);
}

/* dzn = g f (1 - n^2) (into n); then, with e = dr - g (dr = dzn Un, the caller's product, in e):
 * dzf = g n f (1 - f) + e hp f (1 - f) (into dzf); gp += g + e f. */
static void mgu_bwd_n_row(long H, const float *restrict f, float *restrict n, const float *restrict g) {
    for (long j = 0; j < H; j++) n[j] = g[j] * f[j] * (1.0f - n[j] * n[j]);
}

static void mgu_bwd_f_row(long H, const float *restrict f, const float *restrict nn, const float *restrict hp,
                          const float *restrict g, const float *restrict dr, float *restrict dzf,
                          float *restrict gp) {
    for (long j = 0; j < H; j++) {
        float fj = f[j], gj = g[j], e = dr[j] - gj, d = fj * (1.0f - fj);
        dzf[j] = gj * nn[j] * d + e * hp[j] * d;
        gp[j] += gj + e * fj;
    }
}

static void mgu_bwd_lane(const void *arg, long lane) {
    const struct mgu *a = arg;
    long g, b0, nb;
    block_rows(a->B, a->G, a->split, lane, &g, &b0, &nb);
    const long H = a->H, BH = a->B * H;
    const float *Uf = a->Uf + g * H * H, *Un = a->Un + g * H * H;
    float *gUf = lane_sum(&a->dw, lane, 0), *gUn = lane_sum(&a->dw, lane, 1);
    float *e = a->E + b0 * H, *nsave = a->E + BH + b0 * H; /* dr, and n of the step (overwritten by dzn) */
    for (long t = a->T - 1; t >= 0; t--) {
        const long o = t * BH + b0 * H;
        const float *hp = t ? a->hs + (t - 1) * BH + b0 * H : a->h0 + b0 * H;
        const float *gn = a->Gr + (t + 1) * BH + b0 * H;
        float *gp = a->Gr + t * BH + b0 * H;
        memcpy(nsave, a->N + o, nb * H * sizeof(float));
        for (long r = 0; r < nb; r++) mgu_bwd_n_row(H, a->F + o + r * H, a->N + o + r * H, gn + r * H);
        gemm(nb, H, H, a->N + o, H, 1, Un, H, e, H, 0); /* dr = dzn Un */
        for (long r = 0; r < nb; r++)
            mgu_bwd_f_row(H, a->F + o + r * H, nsave + r * H, hp + r * H, gn + r * H, e + r * H,
                          a->DZF + o + r * H, gp + r * H);
        gemm(nb, H, H, a->DZF + o, H, 1, Uf, H, gp, H, 1); /* gp += dzf Uf */
        if (gUf) {
            gemm(H, H, nb, a->DZF + o, 1, H, hp, H, gUf, H, 1);     /* gUf += dzf^T hp */
            gemm(H, H, nb, a->N + o, 1, H, a->R + o, H, gUn, H, 1); /* gUn += dzn^T (f hp) */
        }
    }
}

/* F, R, N as the forward kept them (N becomes dL/dxn); DZF (T, B, H) receives dL/dxf; G (T + 1, B, H)
 * as for the other scans; Uf, Un (G, H, H); gUf, gUn zeroed by the caller, or both NULL.
 * Returns 0, or -1 if scratch memory is short. */
long mgu_bwd_scan(long T, long B, long H, long G, float *F, float *R, float *N, const float *hs, const float *h0,
                  const float *Uf, const float *Un, float *DZF, float *Gr, float *gUf, float *gUn, long threads) {
    struct mgu a = {.T = T, .B = B, .H = H, .G = G, .keep = 1, .slots = T, .Uf = Uf, .Un = Un, .h0 = h0, .F = F,
                    .R = R, .N = N, .hs = (float *)hs, .DZF = DZF, .Gr = Gr,
                    .dw = {.parts = 2, .n = H * H, .group_stride = H * H, .dst = {gUf, gUn}}};
    const long lanes = lanes_for(G, B / G, &a.split);
    a.dw.split = a.split;
    if (!(a.E = malloc(2 * B * H * sizeof(float)))) return -1;
    const long status = run_lanes(mgu_bwd_lane, &a, lanes, threads, &a.dw);
    free(a.E);
    return status;
}
