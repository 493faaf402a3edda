/* Pre/post-processing kernels for the runtime's job runners.
 *
 * Called through cffi (API mode, see build_kernels.py); cffi releases the GIL
 * around every call, so a long kernel on one thread never stalls the others.
 * Every kernel has a NumPy twin in kernels.py that defines the same result
 * bit for bit; tests compare the two on random inputs.
 *
 * Kernels:
 *   normalisation   out[r][c] = (x[r][c] - mean[c]) / std[c]   (float32 ops)
 *   top-k / argmax  per row, by the total order of arc_key() below
 *   fp16, bf16      both ways; narrowing rounds to nearest, ties to even
 *
 * Conventions: sizes are int64_t element counts; buffers are C-contiguous;
 * the Python face validates shapes and dtypes before it calls in, and the
 * kernels re-check what they can cheaply and return ARC_EINVAL otherwise.
 * Nothing here allocates or keeps state, except the two counters that let
 * the tests prove that two threads ran kernels at the same time.
 *
 * Floating point: compiled with -ffp-contract=off (no fused multiply-add,
 * so results equal NumPy's separately rounded operations) and
 * -fno-trapping-math (FP exception flags are not observed; this lets the
 * compiler turn the conversion loops' selects into vector blends). The fp16 subnormal
 * path uses one float addition and so needs round-to-nearest; the kernel
 * switches the calling thread's rounding mode to it for the duration of the
 * call if someone changed it (the mode is per thread).
 */

#include <fenv.h>
#include <stdint.h>
#include <string.h>

/* Hot loops are compiled twice, for AVX2 and for the baseline, and the
 * loader picks one per machine (GCC's target_clones, through a glibc ifunc).
 * Results are the same bit for bit: the kernels use only exact integer ops
 * and correctly rounded IEEE float ops, and contraction is off. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__GLIBC__) && !defined(ARC_NO_CLONES)
#define ARC_HOT __attribute__((target_clones("avx2", "default")))
#else
#define ARC_HOT
#endif

#define ARC_OK 0
#define ARC_EINVAL -1

/* -- concurrency probe ----------------------------------------------------
 * How many threads are inside a kernel right now, and the most ever seen.
 * With the GIL held during calls the peak could never exceed 1.
 */
static int64_t arc_inside = 0;
static int64_t arc_inside_max = 0;

static void arc_enter(void)
{
    int64_t now = __atomic_add_fetch(&arc_inside, 1, __ATOMIC_SEQ_CST);
    int64_t seen = __atomic_load_n(&arc_inside_max, __ATOMIC_SEQ_CST);
    while (now > seen &&
           !__atomic_compare_exchange_n(&arc_inside_max, &seen, now, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        /* seen was reloaded by the failed exchange; try again */
    }
}

static void arc_leave(void)
{
    __atomic_sub_fetch(&arc_inside, 1, __ATOMIC_SEQ_CST);
}

int64_t arc_concurrency_max(void)
{
    return __atomic_load_n(&arc_inside_max, __ATOMIC_SEQ_CST);
}

void arc_concurrency_reset(void)
{
    __atomic_store_n(&arc_inside_max, 0, __ATOMIC_SEQ_CST);
}

/* -- bit casts ------------------------------------------------------------ */

static inline uint32_t arc_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float arc_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* -- normalisation -------------------------------------------------------- */

ARC_HOT
int arc_normalize_f32(const float *x, float *out, int64_t rows, int64_t cols,
                      const float *mean, const float *std)
{
    if (rows < 0 || cols < 0)
        return ARC_EINVAL;
    arc_enter();
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *orow = out + r * cols;
        for (int64_t c = 0; c < cols; c++)
            orow[c] = (xr[c] - mean[c]) / std[c];
    }
    arc_leave();
    return ARC_OK;
}

/* -- top-k and argmax ----------------------------------------------------
 * The order: a signed integer key per float that is monotone in its value,
 * with -0.0 equal to +0.0 and every NaN equal to every other NaN and above
 * +inf (as NumPy's argmax treats NaN: the first NaN wins). Ties go to the
 * lower column index. The NumPy twin computes the same keys.
 */

static inline int32_t arc_key(float f)
{
    uint32_t u = arc_bits(f);
    uint32_t a = u & 0x7fffffffu;
    /* negative floats: flip the magnitude bits so larger magnitude is smaller */
    int32_t k = (int32_t)(u & 0x80000000u ? u ^ 0x7fffffffu : u);
    k = a == 0 ? 0 : k;                    /* -0.0 == +0.0 */
    k = a > 0x7f800000u ? INT32_MAX : k;   /* NaN */
    return k;
}

/* a beats b: larger key, or equal key and smaller index */
static inline int arc_beats(int32_t ka, int64_t ia, int32_t kb, int64_t ib)
{
    return ka > kb || (ka == kb && ia < ib);
}

/* Four keys at once with GCC/Clang vector extensions (SSE2 on x86-64, NEON
 * on Arm): SSE2 has no 32-bit integer max, so the compiler does not
 * vectorise the scalar loop by itself. Same result as arc_key, lane by lane. */
typedef int32_t arc_v4i __attribute__((vector_size(16)));
typedef uint32_t arc_v4u __attribute__((vector_size(16)));

static inline arc_v4i arc_key4(const float *p)
{
    arc_v4u u;
    memcpy(&u, p, sizeof u);
    arc_v4i mag = (arc_v4i)(u & 0x7fffffffu);
    arc_v4i neg = (arc_v4i)u < 0;                          /* -1 where the sign is set */
    arc_v4i k = (arc_v4i)(u ^ ((arc_v4u)neg & 0x7fffffffu));
    k &= ~(mag == 0);                                      /* -0.0 == +0.0 */
    arc_v4i nan = mag > 0x7f800000;
    return (k & ~nan) | (nan & INT32_MAX);
}

static inline int arc_any4(arc_v4i m)
{
    return (m[0] | m[1] | m[2] | m[3]) != 0;
}

typedef float arc_v4f __attribute__((vector_size(16)));

static inline arc_v4f arc_load4f(const float *p)
{
    arc_v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* lane-wise: b where b > a, else a (NaN never wins; the caller tracks it) */
static inline arc_v4f arc_max4f(arc_v4f a, arc_v4f b)
{
    arc_v4i gt = b > a;
    return (arc_v4f)(((arc_v4i)b & gt) | ((arc_v4i)a & ~gt));
}

ARC_HOT
int arc_argmax_f32(const float *x, int64_t rows, int64_t cols, int64_t *idx)
{
    if (rows < 0 || cols < 1)
        return ARC_EINVAL;
    arc_enter();
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        int64_t best = 0;
        if (cols >= 16) {
            /* pass 1, on floats (cheaper than keys), sixteen lanes at a time
             * in four independent chains: the largest non-NaN value, and
             * whether a NaN was seen. -0.0 and +0.0 compare equal, so which
             * one a lane keeps is moot. */
            arc_v4f m0 = arc_load4f(xr), m1 = arc_load4f(xr + 4);
            arc_v4f m2 = arc_load4f(xr + 8), m3 = arc_load4f(xr + 12);
            arc_v4i nan = (m0 != m0) | (m1 != m1) | (m2 != m2) | (m3 != m3);
            int64_t c = 16;
            for (; c + 16 <= cols; c += 16) {
                arc_v4f v0 = arc_load4f(xr + c), v1 = arc_load4f(xr + c + 4);
                arc_v4f v2 = arc_load4f(xr + c + 8), v3 = arc_load4f(xr + c + 12);
                nan |= (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3);
                m0 = arc_max4f(m0, v0);
                m1 = arc_max4f(m1, v1);
                m2 = arc_max4f(m2, v2);
                m3 = arc_max4f(m3, v3);
            }
            arc_v4f mv = arc_max4f(arc_max4f(m0, m1), arc_max4f(m2, m3));
            float m = mv[0];
            for (int j = 1; j < 4; j++)
                m = mv[j] > m || m != m ? mv[j] : m;
            int any_nan = arc_any4(nan);
            for (; c < cols; c++) {
                any_nan |= xr[c] != xr[c];
                m = xr[c] > m || m != m ? xr[c] : m;
            }
            /* pass 2: the first NaN if there is one, else the first maximum */
            if (any_nan) {
                for (; best + 4 <= cols; best += 4) {
                    arc_v4f v = arc_load4f(xr + best);
                    if (arc_any4(v != v))
                        break;
                }
                while (xr[best] == xr[best])
                    best++;
            } else {
                for (; best + 4 <= cols; best += 4)
                    if (arc_any4(arc_load4f(xr + best) == m))
                        break;
                while (xr[best] != m)
                    best++;
            }
        } else {
            int32_t kbest = arc_key(xr[0]);
            for (int64_t c = 1; c < cols; c++) {
                int32_t k = arc_key(xr[c]);
                if (k > kbest) {
                    kbest = k;
                    best = c;
                }
            }
        }
        idx[r] = best;
    }
    arc_leave();
    return ARC_OK;
}

/* Sift down in a heap whose root is the worst element kept so far: a min-heap
 * under arc_beats. The heap lives in the row's index output; keys are
 * recomputed from the row, which is cheaper than a scratch allocation. */
static void arc_sift_down(const float *xr, int64_t *heap, int64_t n, int64_t i)
{
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, worst = i;
        if (l < n && arc_beats(arc_key(xr[heap[worst]]), heap[worst], arc_key(xr[heap[l]]), heap[l]))
            worst = l;
        if (r < n && arc_beats(arc_key(xr[heap[worst]]), heap[worst], arc_key(xr[heap[r]]), heap[r]))
            worst = r;
        if (worst == i)
            return;
        int64_t t = heap[i];
        heap[i] = heap[worst];
        heap[worst] = t;
        i = worst;
    }
}

ARC_HOT
int arc_topk_f32(const float *x, int64_t rows, int64_t cols, int64_t k,
                 int64_t *idx, float *val)
{
    if (rows < 0 || cols < 0 || k < 0 || k > cols)
        return ARC_EINVAL;
    if (k == 0)
        return ARC_OK;
    arc_enter();
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        int64_t *heap = idx + r * k;
        /* the first k columns, heapified */
        for (int64_t c = 0; c < k; c++)
            heap[c] = c;
        for (int64_t i = k / 2 - 1; i >= 0; i--)
            arc_sift_down(xr, heap, k, i);
        /* the rest, in column order: a later column with an equal key loses
         * to the kept one, so "ties to the lower index" holds */
        int32_t kroot = arc_key(xr[heap[0]]);
        int64_t c = k;
        while (c < cols) {
            /* most columns lose to the root: skip four at a time */
            if (c + 4 <= cols && !arc_any4(arc_key4(xr + c) > kroot)) {
                c += 4;
                continue;
            }
            int32_t kc = arc_key(xr[c]);
            if (kc > kroot) {
                heap[0] = c;
                arc_sift_down(xr, heap, k, 0);
                kroot = arc_key(xr[heap[0]]);
            }
            c++;
        }
        /* heap sort: pop the worst to the back, best ends up first */
        for (int64_t n = k - 1; n > 0; n--) {
            int64_t t = heap[0];
            heap[0] = heap[n];
            heap[n] = t;
            arc_sift_down(xr, heap, n, 0);
        }
        float *vr = val + r * k;
        for (int64_t i = 0; i < k; i++)
            vr[i] = xr[heap[i]];
    }
    arc_leave();
    return ARC_OK;
}

/* -- fp16 ------------------------------------------------------------------
 * float32 -> float16, round to nearest even, after F. Giesen's
 * float_to_half_fast3_rtne: normal results by integer rounding, subnormal
 * results by letting the FPU round (adding 0.5 puts the value's bits in
 * the low mantissa), overflow to inf. NaN stays NaN: sign and the top ten
 * payload bits kept, quiet bit set (what x86's vcvtps2ph does).
 * Written without branches so the compiler vectorises the loop.
 */

static inline uint16_t arc_f32_to_f16_1(uint32_t u)
{
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    uint32_t odd = (a >> 13) & 1u;
    /* rebias 127 -> 15 and round: a - (112 << 23) + 0xfff + odd */
    uint32_t normal = (a - 0x38000000u + 0xfffu + odd) >> 13;
    uint32_t sub = arc_bits(arc_float(a) + 0.5f) - 0x3f000000u;
    uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
    uint32_t h = a < 0x38800000u ? sub : normal;  /* below 2^-14: subnormal or zero */
    h = a >= 0x47800000u ? 0x7c00u : h;           /* 65536 and up: inf */
    h = a > 0x7f800000u ? nan : h;
    return (uint16_t)(sign | h);
}

static inline uint32_t arc_f16_to_f32_1(uint16_t h16)
{
    uint32_t h = h16;
    uint32_t sign = (h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    uint32_t normal = ((e + 112u) << 23) | (m << 13);
    /* subnormal and zero: m * 2^-24 is exact in float32 */
    uint32_t sub = arc_bits((float)m * 5.9604644775390625e-8f);
    uint32_t infnan = 0x7f800000u | (m << 13); /* NaN payload kept, not quieted */
    uint32_t f = e == 0 ? sub : normal;
    f = e == 31 ? infnan : f;
    return sign | f;
}

ARC_HOT
void arc_f32_to_f16(const uint32_t *x, uint16_t *out, int64_t n)
{
    int mode = fegetround();
    if (mode != FE_TONEAREST)
        fesetround(FE_TONEAREST);
    arc_enter();
    for (int64_t i = 0; i < n; i++)
        out[i] = arc_f32_to_f16_1(x[i]);
    arc_leave();
    if (mode != FE_TONEAREST)
        fesetround(mode);
}

ARC_HOT
void arc_f16_to_f32(const uint16_t *h, uint32_t *out, int64_t n)
{
    arc_enter();
    for (int64_t i = 0; i < n; i++)
        out[i] = arc_f16_to_f32_1(h[i]);
    arc_leave();
}

/* -- bf16 ------------------------------------------------------------------
 * bfloat16 is the top half of a float32. Narrowing rounds to nearest even
 * by integer addition (overflow carries into the exponent and gives inf, as
 * it should); NaN keeps its sign and top payload bits with the quiet bit set.
 * Widening is a shift: exact, NaN payload kept.
 */

ARC_HOT
void arc_f32_to_bf16(const uint32_t *x, uint16_t *out, int64_t n)
{
    arc_enter();
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = x[i];
        uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        uint32_t nan = (u >> 16) | 0x0040u;
        out[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
    }
    arc_leave();
}

ARC_HOT
void arc_bf16_to_f32(const uint16_t *b, uint32_t *out, int64_t n)
{
    arc_enter();
    for (int64_t i = 0; i < n; i++)
        out[i] = (uint32_t)b[i] << 16;
    arc_leave();
}
