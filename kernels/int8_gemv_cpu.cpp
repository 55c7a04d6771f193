// One-row int8 weight-only product on x86 CPUs with AVX-512: y[o] = scale[o] * sum_k x[k] w[o, k].
//
// Why a kernel of our own: inductor's form of this product keeps one vector accumulator a row, so
// each 16 weights wait on the previous add (a latency chain). Converting int8 to float costs more
// than the float32 product's plain load, so the chain, not memory, set the speed: 22-26 G weights/s
// streamed from memory on the 2-core EPYC host against ~30 GB/s a read sweep reaches. Two
// accumulators a row break the chain; the rows are read in order, one stream a thread, which the
// hardware prefetcher follows (four rows at once, four streams, halved the speed there).
// Accumulation is float32 in a fixed order for a given K (results do not depend on thread count).
#include <ATen/core/Tensor.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

namespace {

inline __m512 load16(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// How far ahead of the row being summed the next weights are requested, in bytes. The hardware
// prefetcher alone kept too few lines in flight for this loop (it does ~5 instructions a 16
// weights, so the out-of-order window covers under 2 KB ahead): on the 2-core EPYC host, asking
// 4 KB ahead streamed 5-14% faster than none, 2 KB or 8 KB ahead.
constexpr int64_t PREFETCH_AHEAD = 4096;

float dot_row(const float* x, const int8_t* w, int64_t k) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= k; i += 64) {  // one cache line a turn; the sums keep the order of the 32-wide loop
        _mm_prefetch(reinterpret_cast<const char*>(w + i + PREFETCH_AHEAD), _MM_HINT_T0);
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load16(w + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), load16(w + i + 16), a1);
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), load16(w + i + 32), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), load16(w + i + 48), a1);
    }
    for (; i + 32 <= k; i += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load16(w + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), load16(w + i + 16), a1);
    }
    float tail = 0.0f;
    for (; i < k; ++i) tail += x[i] * static_cast<float>(w[i]);
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + tail;
}

at::Tensor int8_gemv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale) {
    TORCH_CHECK(x.scalar_type() == at::kFloat && scale.scalar_type() == at::kFloat, "int8_gemv: x and scale must be float32");
    TORCH_CHECK(w.scalar_type() == at::kChar && w.dim() == 2 && w.is_contiguous(), "int8_gemv: w must be a contiguous int8 matrix");
    const int64_t out = w.size(0), k = w.size(1);
    TORCH_CHECK(x.numel() == k && scale.numel() == out, "int8_gemv: one row of x of w's width, one scale a row");
    auto xc = x.contiguous(), sc = scale.contiguous();
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = out;
    auto y = at::empty(shape, x.options());
    const float *xp = xc.data_ptr<float>(), *sp = sc.data_ptr<float>();
    const int8_t* wp = w.data_ptr<int8_t>();
    float* yp = y.data_ptr<float>();
    // A grain of 64 rows keeps small matrices (a few hundred KB) on one thread where splitting
    // would cost more than it saves; larger ones split evenly, one contiguous block a thread.
    at::parallel_for(0, out, 64, [&](int64_t begin, int64_t end) {
        for (int64_t o = begin; o < end; ++o) yp[o] = sp[o] * dot_row(xp, wp + o * k, k);
    });
    return y;
}

}  // namespace

TORCH_LIBRARY(infercost, m) {
    m.def("int8_gemv(Tensor x, Tensor w, Tensor scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(infercost, CPU, m) {
    m.impl("int8_gemv", &int8_gemv);
}
