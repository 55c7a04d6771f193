// One-row int8 weight-only product on x86 CPUs: y[o] = scale[o] * sum_k x[k] w[o, k], with an
// AVX-512 and an AVX2+FMA form of the same loop, one chosen at run time (int8_gemv_select; the
// Python side tries each form the CPU runs on a matrix in memory and keeps the faster).
//
// Why a kernel of our own: inductor's form of this product keeps one vector accumulator a row, so
// each vector of weights waits on the previous add (a latency chain), and converting int8 to float
// costs more than the float32 product's plain load: the chain, not memory, set the speed (22-26 G
// weights/s from memory on the 2-core EPYC host with AVX-512; on an AVX2-only host inductor's loop
// ran at 0.27x the float32 step). Two accumulators a row break the chain; the rows are read in
// order, one stream a thread, which the hardware prefetcher follows (four rows at once, four
// streams, halved the speed there). Accumulation is float32 in a fixed order for a given K and
// form (results do not depend on thread count).
//
// The file is built without -mavx512f or -mavx2: each form carries its own target attribute, so
// the library loads on any x86-64 CPU and only the chosen form's instructions ever run.
#include <ATen/core/Tensor.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

#include "int8_dot_cpu.h"

namespace {

using namespace infercost_int8;  // the one-row dots (int8_dot_cpu.h)

// A few rows of x against one weight row (decode at batch 2-16): each vector of weights is converted
// once and used by every row, so the weights are read and converted once a step, not once a row.
// Two accumulators a row; MB <= 4 keeps them and the weights in registers (AVX2: 10 of 16).
template <int MB>
__attribute__((target("avx2,fma")))
void dot_rows_avx2(const float* x, int64_t ldx, const int8_t* w, int64_t k, float* out) {
    __m256 a[MB][2];
    for (int m = 0; m < MB; ++m) a[m][0] = a[m][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        const __m256 w0 = load8(w + i), w1 = load8(w + i + 8);
        for (int m = 0; m < MB; ++m) {
            a[m][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + m * ldx + i), w0, a[m][0]);
            a[m][1] = _mm256_fmadd_ps(_mm256_loadu_ps(x + m * ldx + i + 8), w1, a[m][1]);
        }
    }
    for (int m = 0; m < MB; ++m) out[m] = hsum8(_mm256_add_ps(a[m][0], a[m][1])) + dot_tail(x + m * ldx, w, i, k);
}

// The same for two weight rows at once: each vector of x loaded once serves both (with many rows of
// x the product is bound by those loads from L1, not by memory), one accumulator a (row, weight
// row) pair.
template <int MB>
__attribute__((target("avx2,fma")))
void dot_rows2_avx2(const float* x, int64_t ldx, const int8_t* w, int64_t k, float* out0, float* out1) {
    __m256 a[MB][2];
    for (int m = 0; m < MB; ++m) a[m][0] = a[m][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        const __m256 w0 = load8(w + i), w1 = load8(w + k + i);
        for (int m = 0; m < MB; ++m) {
            const __m256 xv = _mm256_loadu_ps(x + m * ldx + i);
            a[m][0] = _mm256_fmadd_ps(xv, w0, a[m][0]);
            a[m][1] = _mm256_fmadd_ps(xv, w1, a[m][1]);
        }
    }
    for (int m = 0; m < MB; ++m) {
        out0[m] = hsum8(a[m][0]) + dot_tail(x + m * ldx, w, i, k);
        out1[m] = hsum8(a[m][1]) + dot_tail(x + m * ldx, w + k, i, k);
    }
}

template <int MB>
__attribute__((target("avx512f,avx512bw,fma")))
void dot_rows_avx512(const float* x, int64_t ldx, const int8_t* w, int64_t k, float* out) {
    __m512 a[MB][2];
    for (int m = 0; m < MB; ++m) a[m][0] = a[m][1] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        const __m512 w0 = load16(w + i), w1 = load16(w + i + 16);
        for (int m = 0; m < MB; ++m) {
            a[m][0] = _mm512_fmadd_ps(_mm512_loadu_ps(x + m * ldx + i), w0, a[m][0]);
            a[m][1] = _mm512_fmadd_ps(_mm512_loadu_ps(x + m * ldx + i + 16), w1, a[m][1]);
        }
    }
    for (int m = 0; m < MB; ++m) out[m] = _mm512_reduce_add_ps(_mm512_add_ps(a[m][0], a[m][1])) + dot_tail(x + m * ldx, w, i, k);
}

template <int MB>
__attribute__((target("avx512f,avx512bw,fma")))
void dot_rows2_avx512(const float* x, int64_t ldx, const int8_t* w, int64_t k, float* out0, float* out1) {
    __m512 a[MB][2];
    for (int m = 0; m < MB; ++m) a[m][0] = a[m][1] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        const __m512 w0 = load16(w + i), w1 = load16(w + k + i);
        for (int m = 0; m < MB; ++m) {
            const __m512 xv = _mm512_loadu_ps(x + m * ldx + i);
            a[m][0] = _mm512_fmadd_ps(xv, w0, a[m][0]);
            a[m][1] = _mm512_fmadd_ps(xv, w1, a[m][1]);
        }
    }
    for (int m = 0; m < MB; ++m) {
        out0[m] = _mm512_reduce_add_ps(a[m][0]) + dot_tail(x + m * ldx, w, i, k);
        out1[m] = _mm512_reduce_add_ps(a[m][1]) + dot_tail(x + m * ldx, w + k, i, k);
    }
}

using RowDot = float (*)(const float*, const int8_t*, int64_t);
using RowsDot = void (*)(const float*, int64_t, const int8_t*, int64_t, float*);
using Rows2Dot = void (*)(const float*, int64_t, const int8_t*, int64_t, float*, float*);

// The forms: 2 = AVX-512, 1 = AVX2 + FMA. int8_gemv_select picks one: its one-row dot and its
// dots of 1 to 4 rows at once.
RowDot chosen = nullptr;
RowsDot chosen_rows[5] = {};
Rows2Dot chosen_rows2[5] = {};

bool supported(int64_t form) {
    __builtin_cpu_init();
    if (form == 2) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    if (form == 1) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return false;
}

// Choose a form: `want` 2 or 1 takes that one if this CPU runs it; 0 takes the best it runs.
// Returns the form chosen, or 0 when none runs here (the caller keeps inductor's loop).
int64_t int8_gemv_select(int64_t want) {
    for (int64_t form : {2, 1}) {
        if ((want == 0 || want == form) && supported(form)) {
            chosen = form == 2 ? dot_row_avx512 : dot_row_avx2;
            if (form == 2) {
                chosen_rows[1] = dot_rows_avx512<1>; chosen_rows[2] = dot_rows_avx512<2>;
                chosen_rows[3] = dot_rows_avx512<3>; chosen_rows[4] = dot_rows_avx512<4>;
                chosen_rows2[1] = dot_rows2_avx512<1>; chosen_rows2[2] = dot_rows2_avx512<2>;
                chosen_rows2[3] = dot_rows2_avx512<3>; chosen_rows2[4] = dot_rows2_avx512<4>;
            } else {
                chosen_rows[1] = dot_rows_avx2<1>; chosen_rows[2] = dot_rows_avx2<2>;
                chosen_rows[3] = dot_rows_avx2<3>; chosen_rows[4] = dot_rows_avx2<4>;
                chosen_rows2[1] = dot_rows2_avx2<1>; chosen_rows2[2] = dot_rows2_avx2<2>;
                chosen_rows2[3] = dot_rows2_avx2<3>; chosen_rows2[4] = dot_rows2_avx2<4>;
            }
            return form;
        }
    }
    chosen = nullptr;
    return 0;
}

const float* sc_ptr(const at::Tensor& scale) {
    TORCH_CHECK(scale.is_contiguous(), "int8 kernels: scale must be contiguous");
    return scale.data_ptr<float>();
}

at::Tensor int8_gemv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale) {
    TORCH_CHECK(chosen != nullptr, "int8_gemv: no form chosen for this CPU (int8_gemv_select first)");
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
    const RowDot dot = chosen;
    // A grain of 64 rows keeps small matrices (a few hundred KB) on one thread where splitting
    // would cost more than it saves; larger ones split evenly, one contiguous block a thread.
    at::parallel_for(0, out, 64, [&](int64_t begin, int64_t end) {
        for (int64_t o = begin; o < end; ++o) yp[o] = sp[o] * dot(xp, wp + o * k, k);
    });
    return y;
}

// x [..., K] with M rows (2 or more) @ (w * scale).T: for each weight row, the rows of x four at a
// time, each block converting the weights once (from L1 after the first).
at::Tensor int8_gemm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale) {
    TORCH_CHECK(chosen != nullptr, "int8_gemm: no form chosen for this CPU (int8_gemv_select first)");
    TORCH_CHECK(x.scalar_type() == at::kFloat && scale.scalar_type() == at::kFloat, "int8_gemm: x and scale must be float32");
    TORCH_CHECK(w.scalar_type() == at::kChar && w.dim() == 2 && w.is_contiguous(), "int8_gemm: w must be a contiguous int8 matrix");
    const int64_t out = w.size(0), k = w.size(1);
    TORCH_CHECK(x.size(-1) == k && scale.numel() == out, "int8_gemm: x of w's width, one scale a row");
    auto xc = x.reshape({-1, k}).contiguous();
    const int64_t rows = xc.size(0);
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = out;
    auto y = at::empty({rows, out}, x.options());
    const float *xp = xc.data_ptr<float>(), *sp = sc_ptr(scale);
    const int8_t* wp = w.data_ptr<int8_t>();
    float* yp = y.data_ptr<float>();
    // Two weight rows at a time from 8 rows of x: each x vector then serves both, 1.4-1.5x faster
    // at 16-64 rows (small-125m's 84 matrices, EPYC, both forms); below 8 rows the two weight
    // streams a thread read at once cost more than the loads saved (AVX2: 4 rows 6.5 -> 9.3 ms).
    const bool pairs = rows >= 8;
    at::parallel_for(0, out, 16, [&](int64_t begin, int64_t end) {
        float part[4], part1[4];
        int64_t o = begin;
        for (; pairs && o + 2 <= end; o += 2) {  // two weight rows at a time
            for (int64_t m = 0; m < rows; m += 4) {
                const int64_t mb = std::min<int64_t>(4, rows - m);
                chosen_rows2[mb](xp + m * k, k, wp + o * k, k, part, part1);
                for (int64_t j = 0; j < mb; ++j) {
                    yp[(m + j) * out + o] = sp[o] * part[j];
                    yp[(m + j) * out + o + 1] = sp[o + 1] * part1[j];
                }
            }
        }
        for (; o < end; ++o) {
            for (int64_t m = 0; m < rows; m += 4) {
                const int64_t mb = std::min<int64_t>(4, rows - m);
                chosen_rows[mb](xp + m * k, k, wp + o * k, k, part);
                for (int64_t j = 0; j < mb; ++j) yp[(m + j) * out + o] = sp[o] * part[j];
            }
        }
    });
    return y.view(shape);
}

// Decode attention over an int8 KV cache, its per-position scales applied outside the sums
// (inductor's loop for it converted int8 no faster than its GEMV did: at context 2048 an int8
// cache made small-125m's step 22% slower than a float one, 2.2x slower on an AVX2-only host).

// scores [B, H, G, S] = q [B, H, G, D] . k [B, H, S, D] (int8) * ks [B, H, S]: the rows of q that
// share a KV head against its keys, a batched int8 product with a scale a position.
at::Tensor int8_attn_scores(const at::Tensor& q, const at::Tensor& k, const at::Tensor& ks) {
    TORCH_CHECK(chosen != nullptr, "int8_attn_scores: no form chosen for this CPU (int8_gemv_select first)");
    TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && ks.dim() == 3 && q.scalar_type() == at::kFloat &&
                k.scalar_type() == at::kChar && ks.scalar_type() == at::kFloat, "int8_attn_scores: q [B,H,G,D] float32, "
                "k [B,H,S,D] int8, ks [B,H,S] float32");
    const int64_t bh = q.size(0) * q.size(1), g = q.size(2), d = q.size(3), s = k.size(2);
    TORCH_CHECK(k.size(0) * k.size(1) == bh && k.size(3) == d && ks.size(2) == s, "int8_attn_scores: shapes differ");
    auto qc = q.contiguous(), kc = k.contiguous(), sc = ks.contiguous();
    auto out = at::empty({q.size(0), q.size(1), g, s}, q.options());
    const float *qp = qc.data_ptr<float>(), *sp = sc.data_ptr<float>();
    const int8_t* kp = kc.data_ptr<int8_t>();
    float* op = out.data_ptr<float>();
    at::parallel_for(0, bh * s, 64, [&](int64_t begin, int64_t end) {
        float part[4];
        for (int64_t i = begin; i < end; ++i) {
            const int64_t h = i / s, pos = i % s;
            for (int64_t m = 0; m < g; m += 4) {
                const int64_t mb = std::min<int64_t>(4, g - m);
                chosen_rows[mb](qp + (h * g + m) * d, d, kp + i * d, d, part);
                for (int64_t j = 0; j < mb; ++j) op[(h * g + m + j) * s + pos] = part[j] * sp[i];
            }
        }
    });
    return out;
}

// out [B, H, G, D] = p [B, H, G, S] @ v [B, H, S, D] (int8): probabilities (already times the
// values' scales) over the int8 values, a KV head's rows four at a time, 8 of D a pass.
__attribute__((target("avx2,fma")))
void attn_values_avx2(const float* p, const int8_t* v, int64_t g, int64_t s, int64_t d, float* out) {
    for (int64_t m = 0; m < g; m += 4) {
        const int64_t mb = std::min<int64_t>(4, g - m);
        int64_t c = 0;
        for (; c + 8 <= d; c += 8) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t pos = 0; pos < s; ++pos) {
                const __m256 vv = load8(v + pos * d + c);
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + m * s + pos), vv, a0);
                if (mb > 1) a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + (m + 1) * s + pos), vv, a1);
                if (mb > 2) a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + (m + 2) * s + pos), vv, a2);
                if (mb > 3) a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + (m + 3) * s + pos), vv, a3);
            }
            _mm256_storeu_ps(out + m * d + c, a0);
            if (mb > 1) _mm256_storeu_ps(out + (m + 1) * d + c, a1);
            if (mb > 2) _mm256_storeu_ps(out + (m + 2) * d + c, a2);
            if (mb > 3) _mm256_storeu_ps(out + (m + 3) * d + c, a3);
        }
        for (; c < d; ++c) {
            for (int64_t j = 0; j < mb; ++j) {
                float acc = 0.0f;
                for (int64_t pos = 0; pos < s; ++pos) acc += p[(m + j) * s + pos] * static_cast<float>(v[pos * d + c]);
                out[(m + j) * d + c] = acc;
            }
        }
    }
}

at::Tensor int8_attn_values(const at::Tensor& p, const at::Tensor& v) {
    TORCH_CHECK(chosen != nullptr, "int8_attn_values: no form chosen for this CPU (int8_gemv_select first)");
    TORCH_CHECK(p.dim() == 4 && v.dim() == 4 && p.scalar_type() == at::kFloat && v.scalar_type() == at::kChar,
                "int8_attn_values: p [B,H,G,S] float32, v [B,H,S,D] int8");
    const int64_t bh = p.size(0) * p.size(1), g = p.size(2), s = p.size(3), d = v.size(3);
    TORCH_CHECK(v.size(0) * v.size(1) == bh && v.size(2) == s, "int8_attn_values: shapes differ");
    auto pc = p.contiguous(), vc = v.contiguous();
    auto out = at::empty({p.size(0), p.size(1), g, d}, p.options());
    const float* pp = pc.data_ptr<float>();
    const int8_t* vp = vc.data_ptr<int8_t>();
    float* op = out.data_ptr<float>();
    at::parallel_for(0, bh, 1, [&](int64_t begin, int64_t end) {
        for (int64_t h = begin; h < end; ++h) attn_values_avx2(pp + h * g * s, vp + h * s * d, g, s, d, op + h * g * d);
    });
    return out;
}

}  // namespace

TORCH_LIBRARY(infercost, m) {
    m.def("int8_attn_scores(Tensor q, Tensor k, Tensor ks) -> Tensor");
    m.def("int8_attn_values(Tensor p, Tensor v) -> Tensor");
    m.def("int8_gemv(Tensor x, Tensor w, Tensor scale) -> Tensor");
    m.def("int8_gemm(Tensor x, Tensor w, Tensor scale) -> Tensor");
    m.def("int8_gemv_select(int want) -> int", &int8_gemv_select);  // no tensor: one kernel for all
}

TORCH_LIBRARY_IMPL(infercost, CPU, m) {
    m.impl("int8_gemv", &int8_gemv);
    m.impl("int8_gemm", &int8_gemm);
    m.impl("int8_attn_scores", &int8_attn_scores);
    m.impl("int8_attn_values", &int8_attn_values);
}
