/* The CPU's own limit for Adam's per-weight sqrt and divide, without XLA: hand-written AVX-512 (or AVX2) loops
 * over 131,072 float32 (the 2048 x 64 first-layer kernel), in L2-resident arrays. Built and run by
 * bench_mlp_bound.py when a C compiler is present:  cc -O3 -march=native bench/divider.c -o divider && ./divider
 * Prints microseconds per pass (minimum of 20 x 100 passes) for sqrt, divide, and divide-by-sqrt; and for the
 * ideal fused first-layer Adam step: g = x^T.delta (batch 5) computed in registers, then m, v and W updated in
 * ONE pass over the three 2048 x 64 arrays (1.5 MiB read, 1.5 MiB written), Keras' formula. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define N (2048 * 64)
static float a[N] __attribute__((aligned(64))), b[N] __attribute__((aligned(64)));
static float w[N] __attribute__((aligned(64))), m[N] __attribute__((aligned(64))), v[N] __attribute__((aligned(64)));
static float x[5][2048], delta[5][64] __attribute__((aligned(64)));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#ifdef __AVX512F__
#define W 16
#define V __m512
#define LOAD _mm512_load_ps
#define STORE _mm512_store_ps
#define SQRT _mm512_sqrt_ps
#define DIV _mm512_div_ps
#define ADD _mm512_add_ps
#define SUB _mm512_sub_ps
#define MUL _mm512_mul_ps
#define FMA _mm512_fmadd_ps
#define SET1 _mm512_set1_ps
#else
#define W 8
#define V __m256
#define LOAD _mm256_load_ps
#define STORE _mm256_store_ps
#define SQRT _mm256_sqrt_ps
#define DIV _mm256_div_ps
#define ADD _mm256_add_ps
#define SUB _mm256_sub_ps
#define MUL _mm256_mul_ps
#define FMA _mm256_fmadd_ps
#define SET1 _mm256_set1_ps
#endif

static double adam(void) {  /* one fused pass: g in registers, m, v, W updated and stored once */
    const V c1 = SET1(0.1f), c2 = SET1(0.001f), alpha = SET1(1e-3f), eps = SET1(1e-7f);
    double best = 1e9;
    for (int r = 0; r < 20; r++) {
        double s = now();
        for (int k = 0; k < 100; k++)
            for (int i = 0; i < 2048; i++)
                for (int j = 0; j < 64; j += W) {
                    V g = MUL(SET1(x[0][i]), LOAD(delta[0] + j));
                    for (int b = 1; b < 5; b++) g = FMA(SET1(x[b][i]), LOAD(delta[b] + j), g);
                    int o = i * 64 + j;
                    V mo = LOAD(m + o), vo = LOAD(v + o);
                    V mn = ADD(mo, MUL(SUB(g, mo), c1)), vn = ADD(vo, MUL(SUB(MUL(g, g), vo), c2));
                    STORE(m + o, mn);
                    STORE(v + o, vn);
                    STORE(w + o, SUB(LOAD(w + o), DIV(MUL(mn, alpha), ADD(SQRT(vn), eps))));
                }
        double e = (now() - s) / 100;
        if (e < best) best = e;
    }
    return best * 1e6;
}

static double run(int kind) {
    double best = 1e9;
    for (int r = 0; r < 20; r++) {
        double s = now();
        for (int k = 0; k < 100; k++)
            for (int i = 0; i < N; i += W) {
                V x = LOAD(a + i);
                V y = kind == 0 ? SQRT(x) : kind == 1 ? DIV(x, ADD(x, x)) : DIV(x, ADD(SQRT(x), x));
                STORE(b + i, y);
            }
        double e = (now() - s) / 100;
        if (e < best) best = e;
    }
    return best * 1e6;
}

int main(void) {
    for (int i = 0; i < N; i++) a[i] = 1.0f + i * 1e-6f;
    for (int b = 0; b < 5; b++) {
        for (int i = 0; i < 2048; i++) x[b][i] = 1e-3f * ((i * 7 + b) % 13);
        for (int j = 0; j < 64; j++) delta[b][j] = 1e-2f * ((j * 3 + b) % 7 - 3);
    }
    for (int i = 0; i < N; i++) { w[i] = 0.01f; m[i] = 0.0f; v[i] = 0.0f; }
    printf("%d-wide vectors: sqrt %.1f us, divide %.1f us, x / (sqrt(x) + x) %.1f us per %d floats; "
           "fused Adam step of the first layer (one pass): %.1f us\n", W, run(0), run(1), run(2), N, adam());
    return (int)(b[5] + w[7]) == 12345;
}
