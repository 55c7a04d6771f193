// The one-row int8 dot products on x86: float32 x with int8 w converted in the loop (the int8 GEMV op,
// int8_gemv_torch_cpu.cpp, which says why those loops are as they are, and the step kernel's int8
// weights with float32 activations), and int8 w with x quantized to int8 (the step kernel's default
// for int8 weights, decode_f32_cpu.h).
#pragma once
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace infercost_int8 {

#if defined(__x86_64__)
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

// -- int8 weights with int8 activations ---------------------------------------------------------
// Why: converting each int8 weight to float32 costs a widening, a conversion and an FMA per 16
// weights, and on the 2-core EPYC host (Zen 5, 2026-12-07) a whole int8 step ran at that arithmetic
// rate (2.21 ms from cache against 2.22 ms from memory), below the memory's. With x quantized as
// llama.cpp's Q8_0 quantizes activations (blocks of 32, each its own scale max|x| / 127, values
// rounded half to even), one VNNI instruction sums 64 products in int32, and the loop streams again.

#endif  // __x86_64__

constexpr int64_t QBLOCK = 32;

// A block holding a NaN or an infinity gets a NaN scale, so the sums over it come out NaN as float32
// activations' would (a check then sees it), not a finite number from the int8 values.
// x quantized, held so that every vector form reads its parts directly: lane j is values 4j..4j+3
// (a 32-bit lane of a VNNI sum), lane_scale[j] its block's scale, lane_bias[j] = -128 * their sum
// (the AVX-512 form sums (w + 128) * q, unsigned by signed, and starts each lane at this bias).
struct QuantizedX {
    std::vector<int8_t> q;
    std::vector<float> lane_scale;
    std::vector<int32_t> lane_bias;
    int64_t k = 0;
};

// Values [begin, k) of x, blocks from `begin` (a multiple of QBLOCK) on, in plain C++.
inline void quantize_blocks_plain(const float* x, int64_t begin, int64_t k, QuantizedX& out) {
    for (int64_t b = begin; b < k; b += QBLOCK) {
        const int64_t n = std::min<int64_t>(QBLOCK, k - b);
        float amax = 0.0f;
        bool finite = true;
        for (int64_t i = 0; i < n; ++i) {
            amax = std::max(amax, std::fabs(x[b + i]));
            finite &= std::isfinite(x[b + i]);
        }
        const float inv = finite && amax > 0.0f ? 127.0f / amax : 0.0f;
        for (int64_t i = 0; i < n; ++i) out.q[b + i] = static_cast<int8_t>(std::nearbyint(x[b + i] * inv));
        for (int64_t j = b / 4; j < (b + n + 3) / 4; ++j) {
            int32_t sum = 0;
            for (int64_t i = 4 * j; i < std::min(4 * j + 4, k); ++i) sum += out.q[i];
            out.lane_scale[j] = finite ? amax / 127.0f : NAN;
            out.lane_bias[j] = -128 * sum;
        }
    }
}

inline void size_for(int64_t k, QuantizedX& out) {
    const int64_t padded = (k + 63) / 64 * 64;  // whole vectors' worth, zeros past k
    if (static_cast<int64_t>(out.q.size()) < padded) {
        out.q.resize(padded);
        out.lane_scale.resize(padded / 4);
        out.lane_bias.resize(padded / 4);
    }
    out.k = k;
}

inline void quantize_plain(const float* x, int64_t k, QuantizedX& out) {
    size_for(k, out);
    quantize_blocks_plain(x, 0, k, out);
}

// sum_i w[i] * q[i] * scale(i) over the blocks from `begin` (a multiple of QBLOCK) to k.
inline float dotq_blocks_plain(const QuantizedX& x, const int8_t* w, int64_t begin) {
    float total = 0.0f;
    for (int64_t b = begin; b < x.k; b += QBLOCK) {
        int32_t sum = 0;
        for (int64_t i = b; i < std::min(b + QBLOCK, x.k); ++i) sum += static_cast<int32_t>(w[i]) * x.q[i];
        total += static_cast<float>(sum) * x.lane_scale[b / 4];
    }
    return total;
}

// The row sums of `rows` consecutive rows of w (x.k values each), before their rows' scales.
inline void dotq_rows_plain(const QuantizedX& x, const int8_t* w, int64_t rows, float* out) {
    for (int64_t r = 0; r < rows; ++r) out[r] = dotq_blocks_plain(x, w + r * x.k, 0);
}

#if defined(__x86_64__)
// The same numbers, 32 values at a time (the rounding of cvtps is half to even, as nearbyint's).
__attribute__((target("avx2,fma")))
inline void quantize_avx2(const float* x, int64_t k, QuantizedX& out) {
    size_for(k, out);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undoes the packs' lane interleave
    const __m256i ones8 = _mm256_set1_epi8(1);
    const __m256i ones16 = _mm256_set1_epi16(1);
    int64_t b = 0;
    for (; b + QBLOCK <= k; b += QBLOCK) {
        const __m256 v0 = _mm256_loadu_ps(x + b), v1 = _mm256_loadu_ps(x + b + 8);
        const __m256 v2 = _mm256_loadu_ps(x + b + 16), v3 = _mm256_loadu_ps(x + b + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        // a NaN or an infinity (max_ps may drop a NaN): the block's scale is NaN, so every sum over it is
        const __m256 inf = _mm256_set1_ps(INFINITY);
        const __m256 bad = _mm256_or_ps(
            _mm256_or_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, v0), inf, _CMP_NLT_UQ), _mm256_cmp_ps(_mm256_andnot_ps(sign, v1), inf, _CMP_NLT_UQ)),
            _mm256_or_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, v2), inf, _CMP_NLT_UQ), _mm256_cmp_ps(_mm256_andnot_ps(sign, v3), inf, _CMP_NLT_UQ)));
        const bool finite = _mm256_movemask_ps(bad) == 0;
        const __m256 inv = _mm256_set1_ps(finite && amax > 0.0f ? 127.0f / amax : 0.0f);
        const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, inv)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, inv));
        const __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, inv)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, inv));
        const __m256i q = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3)), order);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.q.data() + b), q);
        // lane sums of 4: ones (unsigned) times q (signed), then the int16 pairs added
        const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), ones16);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.lane_bias.data() + b / 4), _mm256_slli_epi32(_mm256_sub_epi32(_mm256_setzero_si256(), sums), 7));
        _mm256_storeu_ps(out.lane_scale.data() + b / 4, _mm256_set1_ps(finite ? amax / 127.0f : NAN));
    }
    quantize_blocks_plain(x, b, k, out);
}

// AVX2: |w| (unsigned) times q with w's sign, 32 at a time; each int16 pair sum is at most
// 2 * 128 * 127, so maddubs never saturates; the pairs' sums to int32 lanes of 4, then scaled.
__attribute__((target("avx2,fma")))
inline __m256 block_avx2(const QuantizedX& x, const int8_t* w, int64_t i, __m256 acc) {
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i));
    const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q.data() + i));
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(qv, wv));
    const __m256i lanes = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), _mm256_loadu_ps(x.lane_scale.data() + i / 4), acc);
}

// AVX-VNNI (AVX2 hosts that have it): the same signs, one instruction for the int32 lanes.
__attribute__((target("avx2,fma,avxvnni")))
inline __m256 block_avxvnni(const QuantizedX& x, const int8_t* w, int64_t i, __m256 acc) {
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i));
    const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q.data() + i));
    const __m256i lanes = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(wv, wv), _mm256_sign_epi8(qv, wv));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), _mm256_loadu_ps(x.lane_scale.data() + i / 4), acc);
}

// AVX-512 VNNI: 64 products a vector. AVX-512 has no byte sign instruction, so w is made unsigned
// (w + 128, a xor) and each lane starts at -128 * the sum of its q's, which takes the 128s away.
__attribute__((target("avx512f,avx512bw,avx512vnni,fma")))
inline __m512 block_avx512vnni(const QuantizedX& x, const int8_t* w, int64_t i, __m512 acc) {
    const __m512i wu = _mm512_xor_si512(_mm512_loadu_si512(w + i), _mm512_set1_epi8(static_cast<char>(0x80)));
    const __m512i lanes = _mm512_dpbusd_epi32(_mm512_loadu_si512(x.lane_bias.data() + i / 4), wu,
                                              _mm512_loadu_si512(x.q.data() + i));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(lanes), _mm512_loadu_ps(x.lane_scale.data() + i / 4), acc);
}

// One row at a time, in order (four rows side by side, which shares x's loads, streamed 25-30%
// slower from memory on the 2-core EPYC host: four short streams a thread), four accumulators a
// row so that no FMA waits on the one before it.
#define INFERCOST_DOTQ_ROWS(name, target_isa, vec, step, zero, hsum)                            \
    __attribute__((target(target_isa)))                                                          \
    inline void dotq_rows_##name(const QuantizedX& x, const int8_t* w, int64_t rows, float* out) { \
        for (int64_t r = 0; r < rows; ++r, w += x.k) {                                           \
            vec a0 = zero, a1 = zero, a2 = zero, a3 = zero;                                      \
            int64_t i = 0;                                                                       \
            for (; i + 4 * step <= x.k; i += 4 * step) {                                         \
                a0 = block_##name(x, w, i, a0);                                                  \
                a1 = block_##name(x, w, i + step, a1);                                           \
                a2 = block_##name(x, w, i + 2 * step, a2);                                       \
                a3 = block_##name(x, w, i + 3 * step, a3);                                       \
            }                                                                                    \
            for (; i + step <= x.k; i += step) a0 = block_##name(x, w, i, a0);                   \
            out[r] = hsum(a0, a1, a2, a3) + dotq_blocks_plain(x, w, i);                          \
        }                                                                                        \
    }

__attribute__((target("avx2,fma")))
inline float hsum8x4(__m256 a, __m256 b, __m256 c, __m256 d) {
    return hsum8(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
}

__attribute__((target("avx512f")))
inline float hsum16x4(__m512 a, __m512 b, __m512 c, __m512 d) {
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}

INFERCOST_DOTQ_ROWS(avx2, "avx2,fma", __m256, 32, _mm256_setzero_ps(), hsum8x4)
INFERCOST_DOTQ_ROWS(avxvnni, "avx2,fma,avxvnni", __m256, 32, _mm256_setzero_ps(), hsum8x4)
INFERCOST_DOTQ_ROWS(avx512vnni, "avx512f,avx512bw,avx512vnni,fma", __m512, 64, _mm512_setzero_ps(), hsum16x4)
#undef INFERCOST_DOTQ_ROWS

#endif  // __x86_64__

}  // namespace infercost_int8
