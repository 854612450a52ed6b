/* The CPU's own limit for Adam's per-weight sqrt and divide, without XLA: hand-written AVX-512 (or AVX2) loops
 * over 131,072 float32 (the 2048 x 64 first-layer kernel), in L2-resident arrays. Built and run by
 * bench_mlp_bound.py when a C compiler is present:  cc -O2 -march=native bench/divider.c -o divider && ./divider
 * Prints microseconds per pass (minimum of 20 x 100 passes) for sqrt, divide, and divide-by-sqrt. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define N (2048 * 64)
static float a[N] __attribute__((aligned(64))), b[N] __attribute__((aligned(64)));

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
#else
#define W 8
#define V __m256
#define LOAD _mm256_load_ps
#define STORE _mm256_store_ps
#define SQRT _mm256_sqrt_ps
#define DIV _mm256_div_ps
#define ADD _mm256_add_ps
#endif

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
    printf("%d-wide vectors: sqrt %.1f us, divide %.1f us, x / (sqrt(x) + x) %.1f us per %d floats\n", W, run(0),
           run(1), run(2), N);
    return (int)b[5] == 12345;
}
