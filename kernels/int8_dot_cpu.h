// The one-row int8 weight-only dot products on x86 (float32 x, int8 w converted in the loop): used by
// the int8 GEMV op (int8_gemv_torch_cpu.cpp) and by the step kernel's int8 weights (decode_f32_cpu.h).
// int8_gemv_torch_cpu.cpp says why the loops are as they are.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace infercost_int8 {

// How far ahead of the row being summed the AVX2 loop requests the next weights, in bytes: on the
// 2-core EPYC host it streamed 26-28 G weights/s from memory with it, 25 without (alternating).
constexpr int64_t PREFETCH_AHEAD = 4096;

inline float dot_tail(const float* x, const int8_t* w, int64_t i, int64_t k) {
    float tail = 0.0f;
    for (; i < k; ++i) tail += x[i] * static_cast<float>(w[i]);
    return tail;
}

__attribute__((target("avx512f,avx512bw,fma")))
inline __m512 load16(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// AVX-512: 16 weights a vector, two accumulators. No software prefetch and no 64-wide unrolled
// body: on the 2-core EPYC host (2026-12-06) that form streamed 17-19 G weights/s from memory
// against 25-26 for this one (the same loop, alternating, a step's 49 matrices), and the 4 KB
// prefetch an earlier session found 5-14% faster there cost 10-15% in today's state.
__attribute__((target("avx512f,avx512bw,fma")))
inline float dot_row_avx512(const float* x, const int8_t* w, int64_t k) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load16(w + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), load16(w + i + 16), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + dot_tail(x, w, i, k);
}

__attribute__((target("avx2,fma")))
inline __m256 load8(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

__attribute__((target("avx2,fma")))
inline float hsum8(__m256 s) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

// AVX2: 8 weights a vector, so a 64-byte line is 8 conversions and 8 FMAs. Four accumulators:
// with two, each add waited on the one before it (FMA latency 4 cycles, two a cycle issued).
__attribute__((target("avx2,fma")))
inline float dot_row_avx2(const float* x, const int8_t* w, int64_t k) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= k; i += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(w + i + PREFETCH_AHEAD), _MM_HINT_T0);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8(w + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load8(w + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), load8(w + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), load8(w + i + 24), a3);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 32), load8(w + i + 32), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 40), load8(w + i + 40), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 48), load8(w + i + 48), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 56), load8(w + i + 56), a3);
    }
    for (; i + 32 <= k; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8(w + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load8(w + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), load8(w + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), load8(w + i + 24), a3);
    }
    return hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))) + dot_tail(x, w, i, k);
}

}  // namespace infercost_int8
