/* Per-request greedy loops of the blending operators, compiled on first use (ops/_native.py).

   The torch operators run a batch in lock step: every step is a handful of batched tensor ops,
   and at realistic sizes each step re-reads the whole batch's feature matrices from memory. Here
   each request runs all of its steps on its own, so its working set stays in the core's cache,
   and requests are spread over OpenMP threads. The formulas are the torch path's (SSD in kernel
   space, DPP by Chen's incremental Cholesky in float64, MMR with a running max; the penalties'
   exact integer weights in float64). Every sum over features runs in feature order, vectorised
   across candidates, so a candidate's bits depend on its own inputs only: never on the batch,
   the padding or the other requests (ties go to the lower index).

   Layout: every [B, Np] array is row-major with the padded candidate width Np; features are
   [B, N, D] (N <= Np); constraint arrays are stacked per constraint: [K, B, Np] or [B, L, Np].
   With `steps` (explain's trace) each operator also writes its per-step planes
   [relevance, diversity, penalties..., score, cap_excluded], each [B, T, Np] in its own dtype. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX__
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#define MAX_PLANES 64

typedef struct {
    int n_spacing;
    const float *spacing_flags;    /* [S, B, Np] 0/1 */
    const int32_t *spacing_window; /* [S] */
    const double *spacing_unit;    /* [S] lcm(1..w) or 1 */
    const double *spacing_scale;   /* [S] coefficient / unit */
    int sid_levels;                /* 0: no semantic-ID penalty */
    const float *sid_prefix;       /* [B, L, Np] prefix ranks */
    int32_t sid_window;
    int32_t sid_min_prefix;
    double sid_unit;
    double sid_scale;              /* coefficient / unit / L */
    int n_caps;
    const int64_t *cap_ranks;      /* [C, B, Np] */
    const int32_t *cap_max;        /* [C] */
    const int32_t *cap_window;     /* [C] */
} Constraints;

/* out[i] += sum_k coef[k] * rows[k][i] for k = 0..n_rows-1, in that order for every i (rows are
   `stride` apart). Four rows per pass keep out[] in registers without changing the order. */
#define DEFINE_ACCUMULATE(real, sfx)                                                              \
    static void accumulate_##sfx(const real *restrict rows, size_t stride, const real *coef,      \
                                 int n_rows, int n, real *restrict out) {                         \
        int k = 0;                                                                                \
        for (; k + 4 <= n_rows; k += 4) {                                                         \
            const real *r0 = rows + (size_t)k * stride, *r1 = r0 + stride, *r2 = r1 + stride,     \
                       *r3 = r2 + stride;                                                         \
            real c0 = coef[k], c1 = coef[k + 1], c2 = coef[k + 2], c3 = coef[k + 3];              \
            for (int i = 0; i < n; i++) {                                                         \
                real s = out[i];                                                                  \
                s += r0[i] * c0;                                                                  \
                s += r1[i] * c1;                                                                  \
                s += r2[i] * c2;                                                                  \
                s += r3[i] * c3;                                                                  \
                out[i] = s;                                                                       \
            }                                                                                     \
        }                                                                                         \
        for (; k < n_rows; k++) {                                                                 \
            const real *r0 = rows + (size_t)k * stride;                                           \
            real c0 = coef[k];                                                                    \
            for (int i = 0; i < n; i++) out[i] += r0[i] * c0;                                     \
        }                                                                                         \
    }
DEFINE_ACCUMULATE(float, f)
DEFINE_ACCUMULATE(double, d)

/* out[i] += sum_k coef[k] * rows[k][i] with float32 inputs and a float64 total: the products are
   summed in float32 over blocks of 16 rows, in order, and each block's sum is added to out[i] in
   float64. Reading float32 halves the bytes of the float64 form, the conversion happens once per
   16 products, and the float32 rounding stays that of a 16-term sum instead of a D-term one
   (blocks of 8 measured ~10% slower at D = 256, and no more accurate than the DPP_TAU bound
   needs). Trailing zero rows add exact zeros: the result does not depend on the batch's width. */
static void accumulate_fd(const float *restrict rows, size_t stride, const float *coef, int n_rows,
                          int n, double *restrict out) {
    for (int k = 0; k < n_rows; k += 16) {
        /* A short last block runs the same code as a full one, its missing rows read as row k
           times 0: one instruction sequence for every block, so the trailing zero columns of a
           wider batch leave every bit as it is (two code paths rounded differently). */
        int m = n_rows - k < 16 ? n_rows - k : 16;
        const float *r[16];
        float c[16];
        for (int q = 0; q < 16; q++) {
            r[q] = rows + (size_t)(k + (q < m ? q : 0)) * stride;
            c[q] = q < m ? coef[k + q] : 0.0f;
        }
        for (int i = 0; i < n; i++) {
            float s = r[0][i] * c[0];
            for (int q = 1; q < 16; q++) s += r[q][i] * c[q];
            out[i] += (double)s;
        }
    }
}

/* phi [N, D] of one request, transposed into phi_t [D, N] as `real`; columns of invalid
   candidates are zeroed (padding may hold NaN). */
#define DEFINE_TRANSPOSE(real, sfx)                                                               \
    static void transpose_rows_##sfx(const float *phi, const uint8_t *valid, int i0, int i1,      \
                                     int n, int d, real *phi_t) {                                 \
        for (int i = i0; i < i1; i++) {                                                           \
            const float *row = phi + (size_t)i * d;                                               \
            for (int k = 0; k < d; k++) phi_t[(size_t)k * n + i] = valid[i] ? (real)row[k] : 0;   \
        }                                                                                         \
    }
DEFINE_TRANSPOSE(float, f)
DEFINE_TRANSPOSE(double, d)

static void transpose_f(const float *phi, const uint8_t *valid, int n, int d, float *phi_t) {
    int i0 = 0;
#ifdef __AVX__
    /* Element by element, every store of the scalar form lands on another cache line (~1
       element per cycle, as long as ~7 of the request's 50 kernel rows at N=500, d=256); blocks
       of 8 x 8 through registers write whole runs of 8. */
    for (; i0 + 8 <= n; i0 += 8) {
        int all = 1;
        for (int q = 0; q < 8; q++) all &= valid[i0 + q] != 0;
        if (!all) {
            transpose_rows_f(phi, valid, i0, i0 + 8, n, d, phi_t);
            continue;
        }
        const float *b = phi + (size_t)i0 * d;
        size_t sd = (size_t)d, sn = (size_t)n;
        int k0 = 0;
        for (; k0 + 8 <= d; k0 += 8) {
            __m256 r0 = _mm256_loadu_ps(b + k0), r1 = _mm256_loadu_ps(b + sd + k0),
                   r2 = _mm256_loadu_ps(b + 2 * sd + k0), r3 = _mm256_loadu_ps(b + 3 * sd + k0),
                   r4 = _mm256_loadu_ps(b + 4 * sd + k0), r5 = _mm256_loadu_ps(b + 5 * sd + k0),
                   r6 = _mm256_loadu_ps(b + 6 * sd + k0), r7 = _mm256_loadu_ps(b + 7 * sd + k0);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
                   t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3),
                   t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
                   t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                   s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE),
                   s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE),
                   s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *o = phi_t + (size_t)k0 * sn + i0;
            _mm256_storeu_ps(o, _mm256_permute2f128_ps(s0, s4, 0x20));
            _mm256_storeu_ps(o + sn, _mm256_permute2f128_ps(s1, s5, 0x20));
            _mm256_storeu_ps(o + 2 * sn, _mm256_permute2f128_ps(s2, s6, 0x20));
            _mm256_storeu_ps(o + 3 * sn, _mm256_permute2f128_ps(s3, s7, 0x20));
            _mm256_storeu_ps(o + 4 * sn, _mm256_permute2f128_ps(s0, s4, 0x31));
            _mm256_storeu_ps(o + 5 * sn, _mm256_permute2f128_ps(s1, s5, 0x31));
            _mm256_storeu_ps(o + 6 * sn, _mm256_permute2f128_ps(s2, s6, 0x31));
            _mm256_storeu_ps(o + 7 * sn, _mm256_permute2f128_ps(s3, s7, 0x31));
        }
        for (; k0 < d; k0++)
            for (int q = 0; q < 8; q++) phi_t[(size_t)k0 * sn + i0 + q] = b[(size_t)q * sd + k0];
    }
#endif
    transpose_rows_f(phi, valid, i0, n, n, d, phi_t);
}

static void transpose_d(const float *phi, const uint8_t *valid, int n, int d, double *phi_t) {
    transpose_rows_d(phi, valid, 0, n, n, d, phi_t);
}

/* phi_t as above and, unless squares is NULL, squares[i] = sum_k phi[i, k]^2 in feature order. */
#define DEFINE_LOAD(real, sfx)                                                                    \
    static void load_##sfx(const float *phi, const uint8_t *valid, int n, int d, real *phi_t,     \
                           real *squares) {                                                       \
        transpose_##sfx(phi, valid, n, d, phi_t);                                                 \
        if (!squares) return;                                                                     \
        for (int i = 0; i < n; i++) squares[i] = 0;                                               \
        for (int k = 0; k < d; k++) {                                                             \
            const real *row = phi_t + (size_t)k * n;                                              \
            for (int i = 0; i < n; i++) squares[i] += row[i] * row[i];                            \
        }                                                                                         \
    }
DEFINE_LOAD(float, f)
DEFINE_LOAD(double, d)

/* Running state of one request: its slate so far, what it may still take, and the in-loop
   penalties and caps. */
typedef struct {
    const Constraints *c;
    int b, B, np, T, t_len; /* t_len: T, at least 1 (history buffers) */
    int64_t *idx;      /* [T] this request's row of the output indices */
    float *val;        /* [T] and of the output scores */
    uint8_t *eligible; /* [Np] neither taken nor padding */
    int filled, forced;
    double *flag_hist; /* [S, T] */
    int sid_reach;     /* min(semantic-ID window, T): older picks are never read within T steps */
    double *sid_ring;  /* [reach, Np] */
    double *sid_weight; /* [reach] one step's weights */
    float *cap_counts; /* [C, Np] */
    int64_t *cap_hist; /* [C, T] */
    float *cap_inc;    /* [C, T] */
    double *pen;       /* [Np] one penalty term */
} State;

static int at_least_one(int n) { return n > 0 ? n : 1; }

static int state_init(State *s, const Constraints *c, int b, int B, int np, int T,
                      const uint8_t *valid, int64_t *indices, float *scores) {
    memset(s, 0, sizeof(*s));
    int t_len = at_least_one(T);
    s->c = c;
    s->b = b;
    s->B = B;
    s->np = np;
    s->T = T;
    s->t_len = t_len;
    s->idx = indices + (size_t)b * T;
    s->val = scores + (size_t)b * T;
    int w = c->sid_levels > 0 && c->sid_window > 0 ? c->sid_window : 0;
    s->sid_reach = w < t_len ? w : t_len;
    size_t caps = at_least_one(c->n_caps);
    s->eligible = malloc(np);
    s->flag_hist = calloc((size_t)at_least_one(c->n_spacing) * t_len, sizeof(double));
    s->sid_ring = calloc((size_t)at_least_one(s->sid_reach) * np, sizeof(double));
    s->sid_weight = calloc(at_least_one(s->sid_reach), sizeof(double));
    s->cap_counts = calloc(caps * np, sizeof(float));
    s->cap_hist = calloc(caps * t_len, sizeof(int64_t));
    s->cap_inc = calloc(caps * t_len, sizeof(float));
    s->pen = calloc(np, sizeof(double));
    if (s->eligible) memcpy(s->eligible, valid + (size_t)b * np, np);
    return s->eligible && s->flag_hist && s->sid_ring && s->sid_weight && s->cap_counts &&
           s->cap_hist && s->cap_inc && s->pen;
}

/* Positions past the end of the slate: index -1, score 0. */
static void state_finish(State *s, int64_t *forced_out) {
    for (int u = s->filled; u < s->T; u++) {
        s->idx[u] = -1;
        s->val[u] = 0.0f;
    }
    forced_out[s->b] = s->forced;
}

static void state_free(State *s) {
    free(s->eligible);
    free(s->flag_hist);
    free(s->sid_ring);
    free(s->sid_weight);
    free(s->cap_counts);
    free(s->cap_hist);
    free(s->cap_inc);
    free(s->pen);
}

/* Number of penalty terms: one per spacing set, then the semantic-ID penalty. */
static int n_penalties(const Constraints *c) { return c->n_spacing + (c->sid_levels > 0 ? 1 : 0); }

/* Penalty term `which` at step t for every candidate, into s->pen (float64, as torch computes
   the float64 sums before casting to the operator's dtype). */
static void penalty(State *s, int t, int which) {
    const Constraints *c = s->c;
    int np = s->np;
    double *out = s->pen;
    if (which < c->n_spacing) {
        int k = which, w = c->spacing_window[k];
        int m = w < t ? w : t;
        double sum = 0.0; /* oldest first, weights unit / d */
        for (int d = m; d >= 1; d--)
            sum += s->flag_hist[(size_t)k * s->t_len + (t - d)] * (c->spacing_unit[k] / d);
        double scale = sum * c->spacing_scale[k];
        const float *flags = c->spacing_flags + ((size_t)k * s->B + s->b) * np;
        for (int i = 0; i < np; i++) out[i] = flags[i] * scale;
        return;
    }
    /* The ring holds the last reach = min(window, T) picks (pick t in slot t % reach): for t < T
       that is every pick within the window, and slot (t - d) % reach is distance d back. */
    int w = s->sid_reach;
    if (w <= 0 || t == 0) {
        for (int i = 0; i < np; i++) out[i] = 0.0;
        return;
    }
    double *weight = s->sid_weight;
    for (int q = 0; q < w; q++) weight[q] = 0.0;
    for (int d = 1; d <= (w < t ? w : t); d++) weight[(t - d) % w] = c->sid_unit / d;
    for (int i = 0; i < np; i++) {
        double num = 0.0;
        for (int q = 0; q < w; q++) num += weight[q] * s->sid_ring[(size_t)q * np + i];
        out[i] = num * c->sid_scale;
    }
}

/* Number of caps candidate i would violate if taken now. */
static int violations(const State *s, int i) {
    const Constraints *c = s->c;
    int v = 0;
    for (int k = 0; k < c->n_caps; k++) {
        int64_t r = c->cap_ranks[((size_t)k * s->B + s->b) * s->np + i];
        if (s->cap_counts[(size_t)k * s->np + r] >= (float)c->cap_max[k]) v++;
    }
    return v;
}

/* Whether some eligible candidate breaks no cap (when none does, the step is forced). */
static int has_ok(const State *s) {
    if (s->c->n_caps == 0) return 1;
    for (int i = 0; i < s->np; i++)
        if (s->eligible[i] && violations(s, i) == 0) return 1;
    return 0;
}

static void state_update(State *s, int t, int j) {
    const Constraints *c = s->c;
    int np = s->np;
    for (int k = 0; k < c->n_spacing; k++)
        s->flag_hist[(size_t)k * s->t_len + t] = c->spacing_flags[((size_t)k * s->B + s->b) * np + j];
    if (s->sid_reach > 0) {
        int levels = c->sid_levels;
        const float *prefix = c->sid_prefix + (size_t)s->b * levels * np;
        double *slot = s->sid_ring + (size_t)(t % s->sid_reach) * np;
        for (int i = 0; i < np; i++) {
            int lcp = 0;
            for (int l = 0; l < levels; l++) lcp += prefix[(size_t)l * np + i] == prefix[(size_t)l * np + j];
            slot[i] = lcp >= c->sid_min_prefix ? (double)lcp : 0.0;
        }
    }
    for (int k = 0; k < c->n_caps; k++) {
        int64_t rj = c->cap_ranks[((size_t)k * s->B + s->b) * np + j];
        s->cap_hist[(size_t)k * s->t_len + t] = rj;
        s->cap_inc[(size_t)k * s->t_len + t] = 1.0f;
        s->cap_counts[(size_t)k * np + rj] += 1.0f;
        int leaving = t - c->cap_window[k] + 1;
        if (leaving >= 0)
            s->cap_counts[(size_t)k * np + s->cap_hist[(size_t)k * s->t_len + leaving]] -=
                s->cap_inc[(size_t)k * s->t_len + leaving];
    }
}

/* The helpers that depend on the operator's dtype (float for SSD and MMR, double for DPP). */
#define DEFINE_STEP_HELPERS(real, sfx)                                                            \
    /* score[i] -= every penalty at step t, in the torch path's order; with `planes` (the step    \
       planes of this request, penalties from planes[2]) each term is also recorded. */          \
    static void subtract_penalties_##sfx(State *s, int t, real *score, real **planes) {           \
        int np = s->np;                                                                           \
        for (int p = 0; p < n_penalties(s->c); p++) {                                             \
            penalty(s, t, p);                                                                     \
            for (int i = 0; i < np; i++) score[i] -= (real)s->pen[i];                             \
            if (planes) {                                                                         \
                real *plane = planes[2 + p] + (size_t)t * np;                                     \
                for (int i = 0; i < np; i++) plane[i] = (real)s->pen[i];                          \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
    /* The pick of one step: the best eligible candidate, lowest index on ties; caps exclude     \
       their violators unless every eligible candidate violates (then the step is forced).       \
       -1 when nothing is left. */                                                               \
    static int pick_##sfx(State *s, const real *score) {                                          \
        int np = s->np, best = -1, best_ok = -1;                                                  \
        if (s->c->n_caps == 0) {                                                                  \
            /* Without caps (taken and padding candidates are at -inf already): the max in 8     \
               lanes, vectorised, then its first index, the lowest on a tie. A NaN score, or     \
               nothing above -inf, takes the loop below, whatever it would pick. */               \
            real hi[8];                                                                           \
            int bad[8] = {0};                                                                     \
            for (int q = 0; q < 8; q++) hi[q] = -INFINITY;                                        \
            int i = 0;                                                                            \
            for (; i + 8 <= np; i += 8)                                                           \
                for (int q = 0; q < 8; q++) {                                                     \
                    real v = score[i + q];                                                        \
                    hi[q] = v > hi[q] ? v : hi[q];                                                \
                    bad[q] |= v != v;                                                             \
                }                                                                                 \
            for (; i < np; i++) {                                                                 \
                hi[0] = score[i] > hi[0] ? score[i] : hi[0];                                      \
                bad[0] |= score[i] != score[i];                                                   \
            }                                                                                     \
            real top = -INFINITY;                                                                 \
            int nan = 0;                                                                          \
            for (int q = 0; q < 8; q++) {                                                         \
                top = hi[q] > top ? hi[q] : top;                                                  \
                nan |= bad[q];                                                                    \
            }                                                                                     \
            if (!nan && top > -INFINITY)                                                          \
                for (i = 0; i < np; i++)                                                          \
                    if (score[i] == top) return i;                                                \
        }                                                                                         \
        real bv = -INFINITY, bv_ok = -INFINITY;                                                   \
        int caps = s->c->n_caps > 0;                                                              \
        for (int i = 0; i < np; i++) {                                                            \
            if (!s->eligible[i]) continue;                                                        \
            real v = score[i];                                                                    \
            if (best < 0 || v > bv) {                                                             \
                bv = v;                                                                           \
                best = i;                                                                         \
            }                                                                                     \
            if (caps && (best_ok < 0 || v > bv_ok) && violations(s, i) == 0) {                    \
                bv_ok = v;                                                                        \
                best_ok = i;                                                                      \
            }                                                                                     \
        }                                                                                         \
        if (!caps || best < 0) return best;                                                       \
        if (best_ok >= 0) return best_ok;                                                         \
        s->forced++;                                                                              \
        return best;                                                                              \
    }                                                                                             \
    /* explain's planes of step t: every candidate's relevance and diversity terms (penalties    \
       were written by subtract_penalties), the maximised score (-inf for a taken or padding     \
       candidate) and whether a cap excluded it. */                                               \
    static void record_step_##sfx(const State *s, int t, const real *score, const real *rel,     \
                                  const real *div, real **planes) {                               \
        int np = s->np, n_pen = n_penalties(s->c);                                                \
        size_t at = (size_t)t * np;                                                               \
        memcpy(planes[0] + at, rel, sizeof(real) * np);                                           \
        memcpy(planes[1] + at, div, sizeof(real) * np);                                           \
        memcpy(planes[2 + n_pen] + at, score, sizeof(real) * np);                                 \
        real *excluded = planes[3 + n_pen] + at;                                                  \
        int ok = s->c->n_caps > 0 && has_ok(s);                                                   \
        for (int i = 0; i < np; i++) excluded[i] = ok && violations(s, i) > 0 ? 1 : 0;            \
    }                                                                                             \
    /* Steps after a request ran out of candidates: a score of -inf, zeros elsewhere. */          \
    static void record_rest_##sfx(int filled, int t_len, int np, int n_planes, real **planes) {   \
        for (int u = filled + 1; u < t_len; u++)                                                  \
            for (int q = 0; q < n_planes; q++) {                                                  \
                real fill = q == n_planes - 2 ? -INFINITY : 0;                                    \
                for (int i = 0; i < np; i++) planes[q][(size_t)u * np + i] = fill;               \
            }                                                                                     \
    }                                                                                             \
    /* Step t given the algorithm's score (relevance and diversity terms, rel and div for the    \
       trace): the penalties, eligibility, the pick and its bookkeeping. Returns the pick, -1    \
       when nothing is left. */                                                                   \
    static int step_##sfx(State *s, int t, real *score, const real *rel, const real *div,         \
                          real **planes) {                                                        \
        subtract_penalties_##sfx(s, t, score, planes);                                            \
        for (int i = 0; i < s->np; i++) score[i] = s->eligible[i] ? score[i] : (real)-INFINITY;   \
        int j = pick_##sfx(s, score);                                                             \
        if (planes) record_step_##sfx(s, t, score, rel, div, planes);                             \
        if (j < 0) return -1;                                                                     \
        s->idx[t] = j;                                                                            \
        s->val[t] = (float)score[j];                                                              \
        s->filled = t + 1;                                                                        \
        s->eligible[j] = 0;                                                                       \
        state_update(s, t, j);                                                                    \
        return j;                                                                                 \
    }
DEFINE_STEP_HELPERS(float, f)
DEFINE_STEP_HELPERS(double, d)

/* Pointers to this request's [T, Np] block of every plane. */
static void plane_views(void *steps, size_t elem, int n_planes, int b, int B, int T, int np,
                        void **out) {
    for (int q = 0; q < n_planes; q++)
        out[q] = (char *)steps + (((size_t)q * B + b) * T) * np * elem;
}

/* MMR (DESIGN 3.7): lam r_i - (1 - lam) max_{j in S} <phi_i, phi_j> - penalties; the first
   pick is the argmax of lam r_i - penalties (r_i - penalties at lam = 0). */
int blend_mmr(int B, int N, int np, int D, int T, float lam, const float *relevance,
              const uint8_t *valid, const float *features, const Constraints *c, int64_t *indices,
              float *scores, int64_t *forced_out, float *steps) {
    int n_planes = 4 + n_penalties(c);
    if (n_planes > MAX_PLANES) return -1;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed)
    for (int b = 0; b < B; b++) {
        State st;
        float *planes[MAX_PLANES];
        if (steps) plane_views(steps, sizeof(float), n_planes, b, B, T, np, (void **)planes);
        float *rel = malloc(sizeof(float) * np), *max_sim = calloc(np, sizeof(float));
        float *score = malloc(sizeof(float) * np), *div = calloc(np, sizeof(float));
        float *sim = malloc(sizeof(float) * at_least_one(N));
        float *phi_t = malloc(sizeof(float) * at_least_one(N) * at_least_one(D));
        if (!state_init(&st, c, b, B, np, T, valid, indices, scores) || !rel || !max_sim ||
            !score || !div || !sim || !phi_t) {
            failed = 1;
        } else {
            const float *r = relevance + (size_t)b * np;
            const float *phi = features + (size_t)b * N * D;
            load_f(phi, st.eligible, N, D, phi_t, NULL);
            /* The first pick at lam = 0 is by relevance itself (lam r_i would tie everything). */
            for (int i = 0; i < np; i++) rel[i] = lam == 0.0f ? r[i] : r[i] * lam;
            float sim_coef = 1.0f - lam;
            for (int t = 0; t < T; t++) {
                if (t == 1 && lam == 0.0f)
                    for (int i = 0; i < np; i++) rel[i] = r[i] * lam;
                for (int i = 0; i < np; i++) score[i] = t ? rel[i] + (-sim_coef) * max_sim[i] : rel[i];
                if (steps)
                    for (int i = 0; i < np; i++) div[i] = t ? max_sim[i] * -sim_coef : 0.0f;
                int j = step_f(&st, t, score, rel, div, steps ? planes : NULL);
                if (j < 0 || t == T - 1) break;
                for (int i = 0; i < N; i++) sim[i] = 0.0f;
                accumulate_f(phi_t, N, phi + (size_t)j * D, D, N, sim);
                for (int i = 0; i < N; i++)
                    if (t == 0 || sim[i] > max_sim[i]) max_sim[i] = sim[i];
            }
            state_finish(&st, forced_out);
            if (steps) record_rest_f(st.filled, T, np, n_planes, planes);
        }
        state_free(&st);
        free(rel);
        free(max_sim);
        free(score);
        free(div);
        free(sim);
        free(phi_t);
    }
    return failed ? -1 : 0;
}

/* SSD (DESIGN 3.3) in kernel space, as ops/ssd.py (whose docstring derives the updates):
   theta r_i + (1 - theta) gamma ||v_i|| - penalties, the norm times the window's basis norms
   for the volume variant. Rows: negC [w, N] (-c_k[i]), P [w, N] (<phi_i, b_k>), phi_t [D, N]
   in one buffer, so that <v_i, b> is one accumulation over [g, -c_j, phi_j].

   Exactness (issue 14): once the window spans phi (rank <= w, duplicates, category one-hots) the
   residuals vanish and ||v_i||^2, <v_i, b> become differences of nearly equal inner products of
   size ||phi_i||^2. In float32 that leaves ~1e-7 absolute error in ||v_i||^2, ~3e-4 in the norm,
   and eviction no longer restores what it projected out; in float64 the same algebra follows
   the explicit-residual recurrence. Carrying everything in float64 costs ~2x the one O(N D)
   product per step, so a request first runs in float32 and watches every eligible residual:
   while ||v_i||^2 >= tau ||phi_i||^2 (tau = ops/_native.py's SSD_TAU) the float32 error in the norm stays at the level of
   float32 relevance (~1e-6 relative); the first step where one falls below it, the request is
   rerun in float64 from the start (ssd_request_d). Random high-dimensional features never
   trip it; the hard regime always does, and pays the float64 price there only. Every request
   makes the float32 attempt, whatever D: D includes the batch's trailing one-hot columns, so a
   shortcut by D would run a request in float64 alone and in float32 inside a batch (different
   bits); the attempt is width-invariant (zero columns add exact zeros) and, on features the
   window spans, trips within D picks. Returns of ssd_request_*: 0 done, 1 tripped (float32
   only), -1 out of memory. */

/* One request of SSD with its state in `real`: the float32 attempt (ssd_request_f) and the
   float64 rerun (ssd_request_d) are the same algorithm, so they are one text. */
#define DEFINE_SSD_REQUEST(real, sfx, sqrt_fn)                                                     \
    static int ssd_request_##sfx(State *st, int N, int np, int D, int T, int w, float theta,       \
                               float div_coef, float eps_f, int volume, const float *r,            \
                               const float *phi, float **planes, double tau) {                     \
        int n = at_least_one(N), status = 0;                                                       \
        real scale = div_coef != 0.0f ? (real)div_coef * (real)div_coef : (real)1;                 \
        real inv_scale = (real)1 / scale, eps = (real)eps_f;                                       \
        float sign = div_coef >= 0 ? 1.0f : -1.0f;                                                 \
        real *buf = calloc((size_t)(2 * w + at_least_one(D)) * n, sizeof(real));                   \
        real *nv2 = calloc(np, sizeof(real)), *sq = calloc(np, sizeof(real));                      \
        real *row0 = malloc(sizeof(real) * n), *vb = malloc(sizeof(real) * n);                     \
        real *u = malloc(sizeof(real) * n), *coef = malloc(sizeof(real) * (2 * w + D + 1));        \
        real *gram = calloc((size_t)w * w, sizeof(real)), *g = malloc(sizeof(real) * w);           \
        float *rel = malloc(sizeof(float) * np), *score = malloc(sizeof(float) * np);              \
        float *div = calloc(np, sizeof(float));                                                    \
        if (!buf || !nv2 || !sq || !row0 || !vb || !u || !coef || !gram || !g || !rel || !score || \
            !div) {                                                                                \
            status = -1;                                                                           \
            goto done;                                                                             \
        }                                                                                          \
        real *neg_c = buf, *p_rows = buf + (size_t)w * n, *phi_t = buf + (size_t)2 * w * n;        \
        load_##sfx(phi, st->eligible, N, D, phi_t, nv2);                                           \
        for (int i = 0; i < N; i++) {                                                              \
            nv2[i] *= scale;                                                                       \
            sq[i] = nv2[i];                                                                        \
        }                                                                                          \
        /* The first pick at theta = 0 is by relevance itself (theta r_i would tie every candidate). */ \
        for (int i = 0; i < np; i++) rel[i] = theta == 0.0f ? r[i] : r[i] * theta;                 \
        for (int t = 0; t < T; t++) {                                                              \
            if (t == 1 && theta == 0.0f)                                                           \
                for (int i = 0; i < np; i++) rel[i] = r[i] * theta;                                \
            int plain = t == 0 || div_coef == 0.0f;                                                \
            if (!plain) {                                                                          \
                real vol = 1;                                                                      \
                if (volume) {                                                                      \
                    int m = t < w ? t : w;                                                         \
                    for (int k = 0; k < m; k++) {                                                  \
                        real gk = gram[k * w + k];                                                 \
                        vol *= sqrt_fn(gk > 0 ? gk : (real)0);                                     \
                    }                                                                              \
                }                                                                                  \
                for (int i = 0; i < np; i++) {                                                     \
                    /* The float32 pass stops where a residual has shrunk below tau of its feature \
                       norm: from there its norm is a difference of nearly equal float32 sums. */  \
                    if (tau > 0 && st->eligible[i] && !(nv2[i] >= tau * sq[i])) {                  \
                        status = 1;                                                                \
                        goto done;                                                                 \
                    }                                                                              \
                    real v = nv2[i] > (real)1e-30 ? nv2[i] : (real)1e-30;                          \
                    real x = sqrt_fn(v);                                                           \
                    if (volume) x *= vol;                                                          \
                    div[i] = (float)x * sign;                                                      \
                }                                                                                  \
            }                                                                                      \
            for (int i = 0; i < np; i++) score[i] = plain ? rel[i] : rel[i] + div[i];              \
            if (planes && plain) memset(div, 0, sizeof(float) * np);                               \
            int j = step_f(st, t, score, rel, div, planes); /* scores are float32 in both */       \
            if (j < 0) break;                                                                      \
            if (t == T - 1 || div_coef == 0.0f) continue;                                          \
            /* Push b = v_j, evicting the oldest basis (slot) when the window is full. */          \
            int slot = t % w, evict = t >= w;                                                      \
            real nbb = nv2[j] * inv_scale;                                                         \
            if (!(nbb > 0)) nbb = 0;                                                               \
            for (int k = 0; k < w; k++) {                                                          \
                real s = p_rows[(size_t)k * n + j];                                                \
                for (int m = 0; m < w; m++) s += gram[k * w + m] * neg_c[(size_t)m * n + j];       \
                g[k] = s;                                                                          \
            }                                                                                      \
            if (evict) g[slot] = 0;                                                                \
            for (int k = 0; k < w; k++) {                                                          \
                coef[k] = g[k];                                                                    \
                coef[w + k] = neg_c[(size_t)k * n + j];                                            \
            }                                                                                      \
            for (int k = 0; k < D; k++) coef[2 * w + k] = (real)phi[(size_t)j * D + k];            \
            for (int i = 0; i < N; i++) row0[i] = 0;                                               \
            accumulate_##sfx(neg_c, n, coef, w, N, row0); /* sum_k g_k (-C_k) */                   \
            memcpy(vb, row0, sizeof(real) * N);                                                    \
            accumulate_##sfx(p_rows, n, coef + w, w + D, N, vb); /* rows P then phi_t follow */    \
            if (evict) {                                                                           \
                /* Restore the evicted basis o: ||v + c_o b_o||^2 = ||v||^2 + (-c_o) u with        \
                   u = -c_o ||b_o||^2 - 2 <v_i, b_o>, <v_i, b_o> = P_o - sum_k C_k G_ko. */        \
                for (int k = 0; k < w; k++) coef[k] = -2 * gram[k * w + slot];                     \
                coef[slot] += gram[slot * w + slot];                                               \
                for (int i = 0; i < N; i++) u[i] = -2 * p_rows[(size_t)slot * n + i];              \
                accumulate_##sfx(neg_c, n, coef, w, N, u);                                         \
                const real *c_o = neg_c + (size_t)slot * n;                                        \
                for (int i = 0; i < N; i++) nv2[i] += scale * c_o[i] * u[i];                       \
            }                                                                                      \
            real neg_denom = -nbb - eps;                                                           \
            real shrink = (neg_denom - eps) * scale;                                               \
            real *c_new = neg_c + (size_t)slot * n, *p_new = p_rows + (size_t)slot * n;            \
            if (neg_denom == 0) {                                                                  \
                /* A zero basis (a zero residual picked with eps = 0) projects nothing out. */     \
                for (int i = 0; i < N; i++) {                                                      \
                    p_new[i] = vb[i] - row0[i];                                                    \
                    c_new[i] = 0;                                                                  \
                }                                                                                  \
            } else {                                                                               \
                for (int i = 0; i < N; i++) {                                                      \
                    p_new[i] = vb[i] - row0[i];                                                    \
                    real nc = vb[i] / neg_denom;                                                   \
                    c_new[i] = nc;                                                                 \
                    nv2[i] += nc * shrink * nc;                                                    \
                }                                                                                  \
            }                                                                                      \
            g[slot] = nbb;                                                                         \
            for (int k = 0; k < w; k++) {                                                          \
                gram[slot * w + k] = g[k];                                                         \
                gram[k * w + slot] = g[k];                                                         \
            }                                                                                      \
        }                                                                                          \
    done:                                                                                          \
        free(buf);                                                                                 \
        free(nv2);                                                                                 \
        free(sq);                                                                                  \
        free(row0);                                                                                \
        free(vb);                                                                                  \
        free(u);                                                                                   \
        free(coef);                                                                                \
        free(gram);                                                                                \
        free(g);                                                                                   \
        free(rel);                                                                                 \
        free(score);                                                                               \
        free(div);                                                                                 \
        return status;                                                                             \
    }

DEFINE_SSD_REQUEST(float, f, sqrtf)
DEFINE_SSD_REQUEST(double, d, sqrt)

/* tau > 0: float32 with the float64 fall-back above; tau <= 0: float64 only. */
int blend_ssd(int B, int N, int np, int D, int T, int w, float theta, float div_coef, float eps,
              int volume, double tau, const float *relevance, const uint8_t *valid,
              const float *features, const Constraints *c, int64_t *indices, float *scores,
              int64_t *forced_out, float *steps) {
    int n_planes = 4 + n_penalties(c);
    if (n_planes > MAX_PLANES || w < 1) return -1;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed)
    for (int b = 0; b < B; b++) {
        State st;
        float *planes[MAX_PLANES];
        if (steps) plane_views(steps, sizeof(float), n_planes, b, B, T, np, (void **)planes);
        const float *r = relevance + (size_t)b * np;
        const float *phi = features + (size_t)b * N * D;
        float **pl = steps ? planes : NULL;
        int status = -1;
        if (state_init(&st, c, b, B, np, T, valid, indices, scores)) {
            int direct = !(tau > 0);
            status = direct ? 1
                            : ssd_request_f(&st, N, np, D, T, w, theta, div_coef, eps, volume, r,
                                            phi, pl, tau);
            if (status == 1) {
                state_free(&st);
                status = -1;
                if (state_init(&st, c, b, B, np, T, valid, indices, scores))
                    status = ssd_request_d(&st, N, np, D, T, w, theta, div_coef, eps, volume, r,
                                           phi, pl, 0.0);
            }
        }
        if (status != 0) {
            failed = 1;
        } else {
            state_finish(&st, forced_out);
            if (steps) record_rest_f(st.filled, T, np, n_planes, planes);
        }
        state_free(&st);
    }
    return failed ? -1 : 0;
}

/* d_j, or +inf (e = 0: the pick adds no direction) where d_j^2 is float64 rounding noise, as
   ops/dpp.py's _pivot: an epsilon below the noise never stops the request, and dividing by the
   root of noise would take the factor to inf and NaN. */
static double pivot(double d2_j, double diag_j) {
    if (d2_j <= diag_j * 1e-13) return INFINITY;
    return sqrt(d2_j > 1e-300 ? d2_j : 1e-300);
}

/* log(x) for positive, normal, finite x: fdlibm's e_log.c (Sun Microsystems, 1993; error below
   1 ulp) without its branches for special arguments, so that a loop over the candidates
   vectorises (glibc's log is a call per element: a third of a float32 kernel row at N = 500). */
static inline double log_normal(double x) {
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10,
                 lg1 = 6.666666666666735130e-01, lg2 = 3.999999999940941908e-01,
                 lg3 = 2.857142874366239149e-01, lg4 = 2.222219843214978396e-01,
                 lg5 = 1.818357216161805012e-01, lg6 = 1.531383769920937332e-01,
                 lg7 = 1.479819860511658591e-01;
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int64_t hx = (int64_t)(bits >> 32);
    int64_t k = (hx >> 20) - 1023;
    hx &= 0x000fffff;
    int64_t i = (hx + 0x95f64) & 0x100000; /* x = 2^k m with m in [sqrt(2)/2, sqrt(2)) */
    uint64_t mbits = ((uint64_t)(hx | (i ^ 0x3ff00000)) << 32) | (bits & 0xffffffffu);
    double m;
    memcpy(&m, &mbits, sizeof m);
    k += i >> 20;
    double f = m - 1.0, s = f / (2.0 + f), dk = (double)k, z = s * s, w = z * z;
    double t1 = w * (lg2 + w * (lg4 + w * lg6)), t2 = z * (lg1 + w * (lg3 + w * (lg5 + w * lg7)));
    double r = t2 + t1, hfsq = 0.5 * f * f;
    double a = dk * ln2_hi - ((hfsq - (s * (hfsq + r) + dk * ln2_lo)) - f);
    double b = dk * ln2_hi - ((s * (f - r) - dk * ln2_lo) - f);
    return ((hx - 0x6147a) | (0x6b851 - hx)) > 0 ? a : b;
}

/* DPP (DESIGN 3.4), greedy MAP by Chen's incremental Cholesky on S = phi phi^T, as ops/dpp.py:
   score log q_i^2 + log d_i^2 - penalties. With `window` > 0, d_i^2 is conditioned on the last
   `window` picks only (their factor rows rebuilt from stored kernel columns). Once the best d_i^2
   a step may take falls below epsilon, the request scores by relevance for good.

   Precision (issue 14). The factor rows c_m, d_i^2 and S_ii are float64 on every path: the early
   stop compares d_i^2 with epsilon (1e-6 by default), and once the picks span phi (low rank,
   duplicates, category one-hots) d_i^2 is a difference of nearly equal sums of size S_ii. The
   one O(N D) product per step, the kernel row S_j. = phi^T phi_j, is the bulk of a request; in
   float64 it reads twice the bytes. So a request first runs with phi^T in float32 and the kernel
   row summed by accumulate_fd (float32 products in blocks of 16, float64 total): S_ji carries a
   relative error of ~1e-7 instead of ~1e-16. While every eligible d_i^2 stays at or above
   tau S_ii (tau = ops/_native.py's DPP_TAU) that error moves log d_i^2 by less than the near-tie
   bound of the exactness tests; the first step where one falls below it, or where the best
   d_i^2 of L comes within DPP_STOP_MARGIN (in log) of epsilon, the request is rerun from the
   start with phi^T in float64 (tau = 0): the early stop is only ever decided on float64 kernel
   rows. Every request makes the float32 attempt, whatever D (as SSD's, for batch invariance: D
   counts the batch's trailing one-hot columns). Returns: 0 done, 1 tripped (the float32 pass
   only), -1 out of memory. */
#define DPP_STOP_MARGIN 0.01
#define DEFINE_DPP_REQUEST(real, sfx, kernel_row)                                                 \
    /* Row j of phi [N, D] as `real`: the features themselves in float32, converted into out    \
       in float64. */                                                                             \
    static const real *phi_row_##sfx(const float *phi, int j, int d, real *out) {                 \
        if (sizeof(real) == sizeof(float)) return (const real *)(phi + (size_t)j * d);            \
        for (int k = 0; k < d; k++) out[k] = (real)phi[(size_t)j * d + k];                        \
        return out;                                                                               \
    }                                                                                             \
    static int dpp_request_##sfx(State *st, int N, int np, int D, int T, int window, int n_rows,  \
                                 double two_alpha, double log_eps, const float *r,                \
                                 const float *phi, double **planes, double tau,                   \
                                 uint8_t *stopped_out) {                                          \
        const double tiny = 1e-300;                                                               \
        int n = at_least_one(N), status = 0;                                                      \
        real *phi_t = malloc(sizeof(real) * n * at_least_one(D));                                 \
        real *prow = malloc(sizeof(real) * at_least_one(D));                                      \
        double *crow = malloc(sizeof(double) * at_least_one(n_rows) * n);                         \
        double *cols = window > 0 ? malloc(sizeof(double) * n * window) : NULL;                   \
        int *picks = window > 0 ? malloc(sizeof(int) * window) : NULL;                            \
        double *coef = malloc(sizeof(double) * at_least_one(n_rows));                             \
        double *num = malloc(sizeof(double) * n);                                                 \
        double *diag = calloc(np, sizeof(double)), *d2 = malloc(sizeof(double) * np);             \
        double *rel = malloc(sizeof(double) * np), *log_q2 = malloc(sizeof(double) * np);         \
        double *log_d2 = calloc(np, sizeof(double)), *score = malloc(sizeof(double) * np);        \
        if (!phi_t || !prow || !crow || (window > 0 && (!cols || !picks)) || !coef ||      \
            !num || !diag || !d2 || !rel || !log_q2 || !log_d2 || !score) {                       \
            status = -1;                                                                          \
            goto done;                                                                            \
        }                                                                                         \
        const uint8_t *eligible = st->eligible;                                                   \
        load_##sfx(phi, eligible, N, D, phi_t, NULL);                                             \
        /* S_ii in float64, in feature order, on both passes (the torch path's bits too). */      \
        for (int k = 0; k < D; k++) {                                                             \
            const real *row = phi_t + (size_t)k * n;                                              \
            for (int i = 0; i < N; i++) diag[i] += (double)row[i] * (double)row[i];               \
        }                                                                                         \
        memcpy(d2, diag, sizeof(double) * np);                                                    \
        for (int i = 0; i < np; i++) {                                                            \
            rel[i] = (double)r[i];                                                                \
            log_q2[i] = rel[i] * two_alpha;                                                       \
        }                                                                                         \
        int stopped = 0, in_window = 0;                                                           \
        for (int t = 0; t < T; t++) {                                                             \
            int scored = 0; /* score[] already holds this step's scores, best their max */        \
            double best = -INFINITY;                                                              \
            if (!stopped) {                                                                       \
                int any = 0, ok = has_ok(st), low = 0;                                            \
                /* Below tau S_ii, d_i^2 is a difference of nearly equal float32-rounded sums. */ \
                if (tau > 0)                                                                      \
                    for (int i = 0; i < np; i++) low |= eligible[i] && !(d2[i] >= tau * diag[i]); \
                if (low) {                                                                        \
                    status = 1;                                                                   \
                    goto done;                                                                    \
                }                                                                                 \
                /* Clamped first, in its own pass: the log's loop then vectorises. */             \
                for (int i = 0; i < np; i++) log_d2[i] = d2[i] > tiny ? d2[i] : tiny;             \
                for (int i = 0; i < np; i++) log_d2[i] = log_normal(log_d2[i]);                   \
                if (st->c->n_caps == 0) {                                                         \
                    /* In 8 lanes (vectorised; a max is exact in any order, NaN never wins),      \
                       writing the step's score on the way (-inf where taken or padding). */      \
                    double hi[8];                                                                 \
                    int bad[8] = {0};                                                             \
                    for (int q = 0; q < 8; q++) hi[q] = -INFINITY;                                \
                    int i = 0;                                                                    \
                    for (; i + 8 <= np; i += 8)                                                   \
                        for (int q = 0; q < 8; q++) {                                             \
                            double v = log_q2[i + q] + log_d2[i + q];                             \
                            v = eligible[i + q] ? v : -INFINITY;                                  \
                            score[i + q] = v;                                                     \
                            hi[q] = v > hi[q] ? v : hi[q];                                        \
                            bad[q] |= v != v;                                                     \
                            any |= eligible[i + q];                                               \
                        }                                                                         \
                    for (; i < np; i++) {                                                         \
                        double v = eligible[i] ? log_q2[i] + log_d2[i] : -INFINITY;               \
                        score[i] = v;                                                             \
                        hi[0] = v > hi[0] ? v : hi[0];                                            \
                        bad[0] |= v != v;                                                         \
                        any |= eligible[i];                                                       \
                    }                                                                             \
                    int nan = 0;                                                                  \
                    for (int q = 0; q < 8; q++) {                                                 \
                        best = hi[q] > best ? hi[q] : best;                                       \
                        nan |= bad[q];                                                            \
                    }                                                                             \
                    scored = !nan;                                                                \
                } else                                                                            \
                    for (int i = 0; i < np; i++) {                                                \
                        if (!eligible[i]) continue;                                               \
                        any = 1;                                                                  \
                        double v = log_q2[i] + log_d2[i];                                         \
                        if (v > best && (!ok || violations(st, i) == 0)) best = v;                \
                    }                                                                             \
                /* Nothing left is exhaustion, not an early stop. */                              \
                if (tau > 0 && any && best < log_eps + DPP_STOP_MARGIN) {                         \
                    status = 1;                                                                   \
                    goto done;                                                                    \
                }                                                                                 \
                if (any && best < log_eps) stopped = 1;                                           \
            }                                                                                     \
            int j = -1;                                                                           \
            if (scored && !stopped && !planes && n_penalties(st->c) == 0 && best > -INFINITY) {   \
                /* No penalties, caps or trace: score is final and best its max, so step_d's      \
                   pick is the first index of best; only its bookkeeping remains. */              \
                for (int i = 0; i < np && j < 0; i++)                                             \
                    if (score[i] == best) j = i;                                                  \
                st->idx[t] = j;                                                                   \
                st->val[t] = (float)score[j];                                                     \
                st->filled = t + 1;                                                               \
                st->eligible[j] = 0;                                                              \
                state_update(st, t, j);                                                           \
            } else {                                                                              \
                for (int i = 0; i < np; i++)                                                      \
                    score[i] = stopped ? rel[i] : log_q2[i] + log_d2[i];                          \
                if (planes && stopped) memset(log_d2, 0, sizeof(double) * np);                    \
                j = step_d(st, t, score, stopped ? rel : log_q2, log_d2, planes);                 \
            }                                                                                     \
            if (j < 0) break;                                                                     \
            if (t == T - 1 || stopped) continue;                                                  \
            const real *phi_j = phi_row_##sfx(phi, j, D, prow);                                   \
            if (window <= 0) {                                                                    \
                /* e_i = (S_ji - <c_j, c_i>) / d_j; c_t = e; d_i^2 -= e_i^2. */                   \
                for (int i = 0; i < N; i++) num[i] = 0.0;                                         \
                kernel_row(phi_t, n, phi_j, D, N, num);                                           \
                for (int m = 0; m < t; m++) coef[m] = -crow[(size_t)m * n + j];                   \
                accumulate_d(crow, n, coef, t, N, num);                                           \
                double d_j = pivot(d2[j], diag[j]);                                               \
                double *e = crow + (size_t)t * n;                                                 \
                for (int i = 0; i < N; i++) {                                                     \
                    e[i] = num[i] / d_j;                                                          \
                    d2[i] -= e[i] * e[i];                                                         \
                }                                                                                 \
            } else {                                                                              \
                /* Keep the last `window` kernel columns; rebuild the factor on them. */          \
                if (in_window == window) {                                                        \
                    memmove(cols, cols + n, sizeof(double) * n * (window - 1));                   \
                    memmove(picks, picks + 1, sizeof(int) * (window - 1));                        \
                    in_window--;                                                                  \
                }                                                                                 \
                double *col = cols + (size_t)in_window * n;                                       \
                for (int i = 0; i < N; i++) col[i] = 0.0;                                         \
                kernel_row(phi_t, n, phi_j, D, N, col);                                           \
                picks[in_window++] = j;                                                           \
                memcpy(d2, diag, sizeof(double) * np);                                            \
                for (int k = 0; k < in_window; k++) {                                             \
                    int pk = picks[k];                                                            \
                    memcpy(num, cols + (size_t)k * n, sizeof(double) * N);                        \
                    for (int m = 0; m < k; m++) coef[m] = -crow[(size_t)m * n + pk];              \
                    accumulate_d(crow, n, coef, k, N, num);                                       \
                    double d_k = pivot(d2[pk], diag[pk]);                                         \
                    double *e = crow + (size_t)k * n;                                             \
                    for (int i = 0; i < N; i++) {                                                 \
                        e[i] = num[i] / d_k;                                                      \
                        d2[i] -= e[i] * e[i];                                                     \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
        *stopped_out = (uint8_t)stopped;                                                          \
    done:                                                                                         \
        free(phi_t);                                                                              \
        free(prow);                                                                               \
        free(crow);                                                                               \
        free(cols);                                                                               \
        free(picks);                                                                              \
        free(coef);                                                                               \
        free(num);                                                                                \
        free(diag);                                                                               \
        free(d2);                                                                                 \
        free(rel);                                                                                \
        free(log_q2);                                                                             \
        free(log_d2);                                                                             \
        free(score);                                                                              \
        return status;                                                                            \
    }
DEFINE_DPP_REQUEST(float, f, accumulate_fd)
DEFINE_DPP_REQUEST(double, d, accumulate_d)

/* tau > 0: float32 with the float64 fall-back above; tau <= 0: float64 only. */
int blend_dpp(int B, int N, int np, int D, int T, int window, double two_alpha, double log_eps,
              double tau, const float *relevance, const uint8_t *valid, const float *features,
              const Constraints *c, int64_t *indices, float *scores, int64_t *forced_out,
              uint8_t *stops_out, double *steps) {
    int n_planes = 4 + n_penalties(c);
    if (n_planes > MAX_PLANES) return -1;
    int n_rows = T > 1 ? T - 1 : 0;
    if (window > 0 && window < n_rows) n_rows = window;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed)
    for (int b = 0; b < B; b++) {
        State st;
        double *planes[MAX_PLANES];
        if (steps) plane_views(steps, sizeof(double), n_planes, b, B, T, np, (void **)planes);
        const float *r = relevance + (size_t)b * np;
        const float *phi = features + (size_t)b * N * D;
        double **pl = steps ? planes : NULL;
        int status = -1;
        if (state_init(&st, c, b, B, np, T, valid, indices, scores)) {
            int direct = !(tau > 0);
            status = direct ? 1
                            : dpp_request_f(&st, N, np, D, T, window, n_rows, two_alpha, log_eps,
                                            r, phi, pl, tau, stops_out + b);
            if (status == 1) {
                state_free(&st);
                status = -1;
                if (state_init(&st, c, b, B, np, T, valid, indices, scores))
                    status = dpp_request_d(&st, N, np, D, T, window, n_rows, two_alpha, log_eps,
                                           r, phi, pl, 0.0, stops_out + b);
            }
        }
        if (status != 0) {
            failed = 1;
        } else {
            state_finish(&st, forced_out);
            if (steps) record_rest_d(st.filled, T, np, n_planes, planes);
        }
        state_free(&st);
    }
    return failed ? -1 : 0;
}


/* The embedding blocks of the feature map (DESIGN 3.2): each of `rows` rows of x [rows, d]
   divided by its max-abs entry (so that the squared norm neither underflows nor overflows), then
   by its L2 norm, times `scale`, into out (row r at out + r * out_stride). Rows with mask 0, all
   zeros or a NaN max are written as zeros, as ops/similarity.py's torch form does. One pass over
   a row in L1 instead of six over the batch. The divisions stay (a reciprocal would change the
   bits of every feature map, and with them explain's figures); x / top is computed once, stored,
   and divided by the norm in place. */
void blend_normalize_rows(int64_t rows, int d, const float *x, const uint8_t *mask, float scale,
                          float *out, int64_t out_stride) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * (int64_t)d;
        float *dst = out + r * out_stride;
        float top = 0.0f;
        int nan = 0;
        if (mask[r]) {
            /* In 8 lanes (vectorised; a max is exact in any order), NaN tracked on the side. */
            float hi[8] = {0.0f};
            int bad[8] = {0};
            int k = 0;
            for (; k + 8 <= d; k += 8)
                for (int q = 0; q < 8; q++) {
                    float a = fabsf(row[k + q]);
                    hi[q] = a > hi[q] ? a : hi[q];
                    bad[q] |= a != a;
                }
            for (; k < d; k++) {
                float a = fabsf(row[k]);
                hi[0] = a > hi[0] ? a : hi[0];
                bad[0] |= a != a;
            }
            for (int q = 0; q < 8; q++) {
                top = hi[q] > top ? hi[q] : top;
                nan |= bad[q];
            }
        }
        if (nan || !(top > 0.0f)) {
            memset(dst, 0, sizeof(float) * d);
            continue;
        }
        float lane[8] = {0.0f}; /* a fixed order of partial sums: vectorised, and deterministic */
        int k = 0;
        for (; k + 8 <= d; k += 8)
            for (int q = 0; q < 8; q++) {
                float y = row[k + q] / top;
                dst[k + q] = y;
                lane[q] += y * y;
            }
        for (; k < d; k++) {
            float y = row[k] / top;
            dst[k] = y;
            lane[0] += y * y;
        }
        float sum = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
        float norm = sqrtf(sum);
        for (int k = 0; k < d; k++) dst[k] = dst[k] / norm * scale;
    }
}

/* Threads of the parallel loops (the caller passes torch's intra-op thread count). */
void blend_set_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* out[i] += sum_k rows[k][i] * coef[k] with float32 inputs and a float64 sum, k = 0..n_rows-1 in
   that order for every i (rows `stride` apart). A product of two float32 values is exact in
   float64, so a fused multiply-add rounds as the separate operations do: the one rounding per
   row is the sum's, in feature order, and a candidate's bits depend on its own inputs only
   (trailing zero rows add exact zeros). With AVX, 16 candidates at a time stay in registers
   over all rows (~1.4x the four-rows-per-pass form at N = 500, D = 256). */
static void accumulate_xd(const float *restrict rows, size_t stride, const float *coef,
                          int n_rows, int n, double *restrict out) {
    int i = 0;
#ifdef __AVX__
    for (; i + 16 <= n; i += 16) {
        __m256d a0 = _mm256_loadu_pd(out + i), a1 = _mm256_loadu_pd(out + i + 4);
        __m256d a2 = _mm256_loadu_pd(out + i + 8), a3 = _mm256_loadu_pd(out + i + 12);
        const float *x = rows + i;
        for (int k = 0; k < n_rows; k++, x += stride) {
            __m256d c = _mm256_set1_pd((double)coef[k]);
            a0 = _mm256_add_pd(a0, _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(x)), c));
            a1 = _mm256_add_pd(a1, _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + 4)), c));
            a2 = _mm256_add_pd(a2, _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + 8)), c));
            a3 = _mm256_add_pd(a3, _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + 12)), c));
        }
        _mm256_storeu_pd(out + i, a0);
        _mm256_storeu_pd(out + i + 4, a1);
        _mm256_storeu_pd(out + i + 8, a2);
        _mm256_storeu_pd(out + i + 12, a3);
    }
#endif
    for (; i < n; i++) {
        double s = out[i];
        for (int k = 0; k < n_rows; k++) s += (double)rows[(size_t)k * stride + i] * coef[k];
        out[i] = s;
    }
}

/* MSD (DESIGN 3.7b), as ops/msd.py, in float64: theta r_i + (1 - theta) sum_{s in S}
   (1 - <phi_i, phi_s>) - penalties with a running sum; one float64 kernel row per pick (float32
   features read once, exact products). The first pick is the argmax of theta r_i - penalties
   (r_i - penalties at theta = 0, where theta r_i would tie every candidate). */
int blend_msd(int B, int N, int np, int D, int T, double theta, const float *relevance,
              const uint8_t *valid, const float *features, const Constraints *c, int64_t *indices,
              float *scores, int64_t *forced_out, double *steps) {
    int n_planes = 4 + n_penalties(c);
    if (n_planes > MAX_PLANES) return -1;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed)
    for (int b = 0; b < B; b++) {
        State st;
        double *planes[MAX_PLANES];
        if (steps) plane_views(steps, sizeof(double), n_planes, b, B, T, np, (void **)planes);
        double *rel = malloc(sizeof(double) * np), *dist = calloc(np, sizeof(double));
        double *score = malloc(sizeof(double) * np), *div = calloc(np, sizeof(double));
        double *sim = malloc(sizeof(double) * at_least_one(N));
        float *phi_t = malloc(sizeof(float) * at_least_one(N) * at_least_one(D));
        if (!state_init(&st, c, b, B, np, T, valid, indices, scores) || !rel || !dist ||
            !score || !div || !sim || !phi_t) {
            failed = 1;
        } else {
            const float *r = relevance + (size_t)b * np;
            const float *phi = features + (size_t)b * N * D;
            load_f(phi, st.eligible, N, D, phi_t, NULL);
            double div_coef = 1.0 - theta;
            /* The first pick at theta = 0 is by relevance itself. */
            for (int i = 0; i < np; i++) rel[i] = theta == 0.0 ? (double)r[i] : (double)r[i] * theta;
            for (int t = 0; t < T; t++) {
                if (t == 1 && theta == 0.0)
                    for (int i = 0; i < np; i++) rel[i] = (double)r[i] * theta;
                for (int i = 0; i < np; i++) {
                    div[i] = t ? dist[i] * div_coef : 0.0;
                    score[i] = t ? rel[i] + div[i] : rel[i];
                }
                int j = step_d(&st, t, score, rel, div, steps ? planes : NULL);
                if (j < 0 || t == T - 1) break;
                for (int i = 0; i < N; i++) sim[i] = 0.0;
                accumulate_xd(phi_t, N, phi + (size_t)j * D, D, N, sim);
                for (int i = 0; i < N; i++) dist[i] += 1.0 - sim[i];
            }
            state_finish(&st, forced_out);
            if (steps) record_rest_d(st.filled, T, np, n_planes, planes);
        }
        state_free(&st);
        free(rel);
        free(dist);
        free(score);
        free(div);
        free(sim);
        free(phi_t);
    }
    return failed ? -1 : 0;
}

/* exp(x) for |x| < 700, vectorisable: x = k ln 2 + r with |r| <= ln 2 / 2 (Cody-Waite, fdlibm's
   split of ln 2), exp(r) by its Taylor polynomial of degree 13 (truncation below 1e-17 relative;
   no division), and 2^k from the bits of a shifted k. Within 2 ulp of exp. */
static inline double exp_bounded(double x) {
    const double shift = 0x1.8p52, inv_ln2 = 1.44269504088896338700e+00,
                 ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double kd = x * inv_ln2 + shift; /* round(x / ln 2) in the low bits */
    uint64_t kbits;
    memcpy(&kbits, &kd, sizeof kbits);
    kd -= shift;
    double r = (x - kd * ln2_hi) - kd * ln2_lo;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    uint64_t sbits = (kbits + 1023) << 52; /* the low 12 bits of k + 1023: 2^k */
    double scale;
    memcpy(&scale, &sbits, sizeof scale);
    return p * scale;
}

/* out[i] = (a + x[i])^gamma for i < n, all a + x[i] >= 0, as exp(gamma log(.)); 0^gamma = 0
   (gamma > 0). A nonzero a + x[i] is at least a product of two nonzero float32 values (2^-298):
   normal, as log_normal needs. Three passes, each of which vectorises (one loop with the
   selects does not). */
static void cover_powers(const double *x, double a, double gamma, int n, double *restrict out) {
    for (int i = 0; i < n; i++) {
        double v = a + x[i];
        out[i] = v > 0.0 ? v : 1.0;
    }
    for (int i = 0; i < n; i++) out[i] = exp_bounded(gamma * log_normal(out[i]));
    for (int i = 0; i < n; i++) out[i] = a + x[i] > 0.0 ? out[i] : 0.0;
}

/* gain[i] += sum_j [(acc_j + S+_ji)^gamma - acc_j^gamma] for i < n, j in order; tmp holds n
   values. `mode` 1 is gamma = 1/2 (a square root, as torch.pow computes it), 0 any other gamma. */
static void cover_gains(const double *sim, size_t stride, const double *acc, const double *acc_g,
                        int n, double gamma, int mode, double *restrict tmp,
                        double *restrict gain) {
    for (int j = 0; j < n; j++) {
        const double *restrict row = sim + (size_t)j * stride;
        double a = acc[j], ag = acc_g[j];
        if (mode == 1) {
            int i = 0;
#ifdef __AVX__
            /* vsqrtpd: the compiler keeps sqrt a call per element (errno for a negative input,
               which a + S+ >= 0 never is); correctly rounded either way, the same bits. */
            __m256d va = _mm256_set1_pd(a), vg = _mm256_set1_pd(ag);
            for (; i + 4 <= n; i += 4) {
                __m256d x = _mm256_sqrt_pd(_mm256_add_pd(va, _mm256_loadu_pd(row + i)));
                _mm256_storeu_pd(gain + i,
                                 _mm256_add_pd(_mm256_loadu_pd(gain + i), _mm256_sub_pd(x, vg)));
            }
#endif
            for (; i < n; i++) gain[i] += sqrt(a + row[i]) - ag;
        } else {
            cover_powers(row, a, gamma, n, tmp);
            for (int i = 0; i < n; i++) gain[i] += tmp[i] - ag;
        }
    }
}

typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

/* S+ = max(0, phi phi^T) of one request into sim [N, stride], every entry one float64 sum over
   the features in order with exact products (as accumulate_xd): S+ is exactly symmetric, so only
   the blocks on and above the diagonal are summed, 4 rows by 8 columns at a time in registers
   (each row of phi^T read once per 4 rows of S+), then mirrored. Rows and columns of padding
   candidates are zero (their features may hold NaN). cj holds 4 D values. */
static void cover_similarities(const float *phi, const float *phi_t, const uint8_t *eligible,
                               int N, int D, size_t stride, double *sim, double *cj) {
    for (int j0 = 0; j0 < N; j0 += 4) {
        int jn = N - j0 < 4 ? N - j0 : 4;
        for (int k = 0; k < D; k++)
            for (int q = 0; q < 4; q++)
                cj[(size_t)k * 4 + q] =
                    q < jn && eligible[j0 + q] ? (double)phi[(size_t)(j0 + q) * D + k] : 0.0;
        double *out[4];
        for (int q = 0; q < 4; q++) out[q] = sim + (size_t)(j0 + (q < jn ? q : 0)) * stride;
        int i = j0;
        for (; i + 8 <= N; i += 8) {
            v4d a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0}, c0 = {0}, c1 = {0}, d0 = {0}, d1 = {0};
            for (int k = 0; k < D; k++) {
                const float *x = phi_t + (size_t)k * N + i;
#ifdef __AVX__
                /* One vcvtps2pd each (GCC 12 splits the generic conversion into halves). */
                v4d x0 = (v4d)_mm256_cvtps_pd(_mm_loadu_ps(x));
                v4d x1 = (v4d)_mm256_cvtps_pd(_mm_loadu_ps(x + 4));
#else
                v4f f0, f1;
                memcpy(&f0, x, sizeof f0);
                memcpy(&f1, x + 4, sizeof f1);
                v4d x0 = __builtin_convertvector(f0, v4d), x1 = __builtin_convertvector(f1, v4d);
#endif
                const double *c = cj + (size_t)k * 4;
                a0 += x0 * c[0];
                a1 += x1 * c[0];
                b0 += x0 * c[1];
                b1 += x1 * c[1];
                c0 += x0 * c[2];
                c1 += x1 * c[2];
                d0 += x0 * c[3];
                d1 += x1 * c[3];
            }
            v4d acc[8] = {a0, a1, b0, b1, c0, c1, d0, d1};
            for (int q = jn - 1; q >= 0; q--) {
                memcpy(out[q] + i, &acc[2 * q], sizeof(v4d));
                memcpy(out[q] + i + 4, &acc[2 * q + 1], sizeof(v4d));
            }
        }
        for (; i < N; i++) {
            double acc[4] = {0.0, 0.0, 0.0, 0.0};
            for (int k = 0; k < D; k++) {
                double x = phi_t[(size_t)k * N + i];
                for (int q = 0; q < 4; q++) acc[q] += x * cj[(size_t)k * 4 + q];
            }
            for (int q = jn - 1; q >= 0; q--) out[q][i] = acc[q];
        }
    }
    for (int j = 0; j < N; j++) {
        double *row = sim + (size_t)j * stride;
        for (int i = j; i < N; i++) row[i] = row[i] > 0.0 ? row[i] : 0.0;
    }
    for (int j = 0; j < N; j++)
        for (int i = 0; i < j; i++) sim[(size_t)j * stride + i] = sim[(size_t)i * stride + j];
}

/* COVER (DESIGN 3.7b), as ops/cover.py, in float64: theta r_i + (1 - theta) gain_i - penalties,
   gain_i = sum_j [(acc_j + S+_ij)^gamma - acc_j^gamma] over the request's candidates j, with
   S+_ij = max(0, <phi_i, phi_j>) computed once (N x N float64: each entry one sum in feature
   order, so S+ is exactly symmetric and only its upper triangle is summed) and acc_j the sum of
   S+_js over the slate so far. Every step recomputes every gain: O(N^2). At gamma = 1 the gain
   is the row sum of S+, fixed. */
int blend_cover(int B, int N, int np, int D, int T, double theta, double gamma,
                const float *relevance, const uint8_t *valid, const float *features,
                const Constraints *c, int64_t *indices, float *scores, int64_t *forced_out,
                double *steps) {
    int n_planes = 4 + n_penalties(c);
    if (n_planes > MAX_PLANES || !(gamma > 0.0 && gamma <= 1.0)) return -1;
    int mode = gamma == 1.0 ? 2 : gamma == 0.5 ? 1 : 0;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed)
    for (int b = 0; b < B; b++) {
        State st;
        double *planes[MAX_PLANES];
        if (steps) plane_views(steps, sizeof(double), n_planes, b, B, T, np, (void **)planes);
        size_t n = (size_t)at_least_one(N);
        double *sim = malloc(sizeof(double) * n * n);
        double *acc = calloc(n, sizeof(double)), *acc_g = calloc(n, sizeof(double));
        double *gain = calloc(np, sizeof(double)), *rel = malloc(sizeof(double) * np);
        double *score = malloc(sizeof(double) * np), *div = malloc(sizeof(double) * np);
        double *tmp = malloc(sizeof(double) * n), *cj = malloc(sizeof(double) * 4 * at_least_one(D));
        float *phi_t = malloc(sizeof(float) * n * at_least_one(D));
        if (!state_init(&st, c, b, B, np, T, valid, indices, scores) || !sim || !acc || !acc_g ||
            !gain || !rel || !score || !div || !tmp || !cj || !phi_t) {
            failed = 1;
        } else {
            const float *r = relevance + (size_t)b * np;
            const float *phi = features + (size_t)b * N * D;
            load_f(phi, st.eligible, N, D, phi_t, NULL);
            cover_similarities(phi, phi_t, st.eligible, N, D, n, sim, cj);
            if (mode == 2)
                for (int j = 0; j < N; j++)
                    for (int i = 0; i < N; i++) gain[i] += sim[(size_t)j * n + i];
            double div_coef = 1.0 - theta;
            for (int i = 0; i < np; i++) rel[i] = (double)r[i] * theta;
            for (int t = 0; t < T; t++) {
                if (mode != 2) {
                    for (int i = 0; i < np; i++) gain[i] = 0.0;
                    cover_gains(sim, n, acc, acc_g, N, gamma, mode, tmp, gain);
                }
                for (int i = 0; i < np; i++) {
                    div[i] = gain[i] * div_coef;
                    score[i] = rel[i] + div[i];
                }
                int j = step_d(&st, t, score, rel, div, steps ? planes : NULL);
                if (j < 0 || t == T - 1) break;
                if (mode == 2) continue;
                const double *row = sim + (size_t)j * n;
                for (int i = 0; i < N; i++) acc[i] += row[i];
                if (mode == 1)
                    for (int i = 0; i < N; i++) acc_g[i] = sqrt(acc[i]);
                else
                    cover_powers(acc, 0.0, gamma, N, acc_g);
            }
            state_finish(&st, forced_out);
            if (steps) record_rest_d(st.filled, T, np, n_planes, planes);
        }
        state_free(&st);
        free(sim);
        free(acc);
        free(acc_g);
        free(gain);
        free(rel);
        free(score);
        free(div);
        free(tmp);
        free(cj);
        free(phi_t);
    }
    return failed ? -1 : 0;
}
