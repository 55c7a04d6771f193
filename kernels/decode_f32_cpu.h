// A whole batch-1 decode step of a Llama-family model on CPUs, dense or with Mixtral-style experts
// (float32 activations; float32 or int8 weights, int8 ones by default summed against their input
// quantized to int8, int8_dot_cpu.h), framework-free: the torch op (decode_f32_torch_cpu.cpp) and
// the XLA FFI handler (decode_f32_jax_cpu.cc) both run infercost_decode_f32::step_in on their own
// tensors, every thread of one team at once (OpenMP's in torch, a pool of its own in jax-cpu;
// step_in takes either): embedding, per layer RMSNorm, fused QKV product (with Qwen2's biases),
// rotary, cache write, grouped-query attention over the cache, output product, RMSNorm, gate/up
// product, SwiGLU and down product (a mixture of experts: the router, then the k chosen experts'
// gate/up rows as one product and their down rows as another, no other expert read), then the
// final norm and the LM head. Same math and op order as llama_torch.py in float32; sums run in a
// different order (float32 rounding apart, the same).
//
// Why a kernel of our own: inductor compiles this step into one C++ kernel too, yet on the 2-core
// EPYC host (2026-12-07) it streamed the weights at 49-62 GB/s while a plain loop of row dot
// products over the same tensors, in the same order, with a barrier after each matrix, streamed
// 73-84 GB/s, side by side in one process; this step streams at about the read sweep's rate
// (bench/perf/decode_vs_hf.py prints both steps' share of it). Each thread streams its share of a
// matrix's rows in order (one stream a thread, which the hardware prefetcher follows), two vector
// accumulators a row so no add waits on the one before, and everything between two products is a
// few thousand floats, done by one thread or by each thread for itself.
//
// Built without -mavx512f or -mavx2: each form carries its own target attribute, so the library
// loads on any x86-64 CPU and only the chosen form's instructions run (form: 0 plain C++, 1
// AVX2+FMA, 2 AVX-512; other CPUs build the plain form only).
#pragma once
#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "int8_dot_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace infercost_decode_f32 {


static float dot_plain(const float* w, const float* x, int64_t k) {
    float a0 = 0.0f, a1 = 0.0f;
    int64_t i = 0;
    for (; i + 2 <= k; i += 2) {
        a0 += w[i] * x[i];
        a1 += w[i + 1] * x[i + 1];
    }
    for (; i < k; ++i) a0 += w[i] * x[i];
    return a0 + a1;
}

// int8 weights (converted in the loop; their rows' scales applied by the caller).
static float dot8_plain(const float* x, const int8_t* w, int64_t k) {
    float a0 = 0.0f, a1 = 0.0f;
    int64_t i = 0;
    for (; i + 2 <= k; i += 2) {
        a0 += x[i] * static_cast<float>(w[i]);
        a1 += x[i + 1] * static_cast<float>(w[i + 1]);
    }
    for (; i < k; ++i) a0 += x[i] * static_cast<float>(w[i]);
    return a0 + a1;
}

// y += a * x: attention's value sums, and its scores where keys are held [hd, positions].
static void axpy_plain(float a, const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma")))
static float dot_avx2(const float* w, const float* x, int64_t k) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    __m256 s = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float tail = 0.0f;
    for (; i < k; ++i) tail += w[i] * x[i];
    return _mm_cvtss_f32(h) + tail;
}

__attribute__((target("avx512f,fma")))
static float dot_avx512(const float* w, const float* x, int64_t k) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    }
    float tail = 0.0f;
    for (; i < k; ++i) tail += w[i] * x[i];
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + tail;
}

__attribute__((target("avx2,fma")))
static void axpy_avx2(float a, const float* x, float* y, int64_t n) {
    const __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] += a * x[i];
}

__attribute__((target("avx512f,fma")))
static void axpy_avx512(float a, const float* x, float* y, int64_t n) {
    const __m512 av = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] += a * x[i];
}
#endif

using Dot = float (*)(const float*, const float*, int64_t);
using Axpy = void (*)(float, const float*, float*, int64_t);
using Dot8 = float (*)(const float*, const int8_t*, int64_t);
using QuantizedX = infercost_int8::QuantizedX;
using Quantize = void (*)(const float*, int64_t, QuantizedX&);
using DotQRows = void (*)(const QuantizedX&, const int8_t*, int64_t, float*);

// dot8: int8 weights by float32 x; quantize + dotq: int8 weights by x quantized to int8 (dotq
// nullptr: int8 weights take dot8).
struct Form {
    Dot dot;
    Axpy axpy;
    Dot8 dot8;
    Quantize quantize;
    DotQRows dotq;
};

// form: 0 plain C++, 1 AVX2+FMA, 2 AVX-512. int8_dot: 0 float32 activations (int8 weights converted
// in the loop), else x quantized to int8 and summed by 1 plain C++, 2 AVX2, 3 AVX-VNNI, 4 AVX-512 VNNI.
// A form this CPU lacks runs as the best it has below it (the caller chooses from the CPU's flags).
static Form form_for(int64_t form, int64_t int8_dot) {
    Form f{dot_plain, axpy_plain, dot8_plain, infercost_int8::quantize_plain, infercost_int8::dotq_rows_plain};
#if defined(__x86_64__)
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (form == 2 && __builtin_cpu_supports("avx512f"))
        f = {dot_avx512, axpy_avx512,
             __builtin_cpu_supports("avx512bw") ? infercost_int8::dot_row_avx512 : avx2 ? infercost_int8::dot_row_avx2 : dot8_plain,
             f.quantize, f.dotq};
    else if (form >= 1 && avx2)
        f = {dot_avx2, axpy_avx2, infercost_int8::dot_row_avx2, f.quantize, f.dotq};
    if (avx2) f.quantize = infercost_int8::quantize_avx2;
    if (int8_dot >= 4 && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw"))
        f.dotq = infercost_int8::dotq_rows_avx512vnni;
    else if (int8_dot >= 3 && avx2 && __builtin_cpu_supports("avxvnni"))
        f.dotq = infercost_int8::dotq_rows_avxvnni;
    else if (int8_dot >= 2 && avx2)
        f.dotq = infercost_int8::dotq_rows_avx2;
#endif
    if (int8_dot == 0) f.dotq = nullptr;
    return f;
}

// A weight matrix [rows, cols]: float32 values, or int8 values with a float32 scale a row.
struct Matrix {
    const void* values;
    const float* scale;  // nullptr: float32 values
};

// Rows [begin, end) of n that thread `id` of `size` takes: contiguous blocks, as OpenMP's static
// schedule splits them (each row's sum is one thread's, so the split never changes a result).
inline void share(int64_t n, int id, int size, int64_t& begin, int64_t& end) {
    const int64_t base = n / size, extra = n % size;
    begin = id * base + std::min<int64_t>(id, extra);
    end = begin + base + (id < extra ? 1 : 0);
}

// How far ahead of the int8 row being summed its thread requests the next rows, in bytes. On the
// 2-core EPYC host (2026-12-07, alternating in one process) a whole int8 step ran 4-5% faster with
// it (2.47 against 2.59 ms; 8 KB: 2.53), a float32 step 3% slower (so float32 rows have none).
constexpr int64_t INT8_AHEAD = 4096;

// y[r] (+)= W[r] . x for rows [begin, end) of W, by one thread: int8 rows as (x @ values.T) * scale,
// with f.dotq against x quantized (qx, which the caller filled for this x: int8_x).
inline void rows_into(const Form& f, Matrix w, const float* x, float* y, int64_t begin, int64_t end, int64_t cols,
                      const float* bias, bool accumulate, const QuantizedX& qx, bool int8_x) {
    const float* wf = static_cast<const float*>(w.values);
    const int8_t* w8 = static_cast<const int8_t*>(w.values);
    // int8 rows: requested INT8_AHEAD bytes before they are summed, from the share's first row on
    const char* bytes = static_cast<const char*>(w.values);
    const char *ahead = bytes + begin * cols, *share_end = bytes + end * cols;
    float sums[4];
    for (int64_t r0 = begin; r0 < end; r0 += 4) {  // four rows a turn: a prefetch, then their sums
        const int64_t n = std::min<int64_t>(4, end - r0);
        if (w.scale)
            for (const char* upto = std::min(share_end, bytes + (r0 + n) * cols + INT8_AHEAD); ahead < upto; ahead += 64)
                __builtin_prefetch(ahead, 0, 3);
        if (int8_x) f.dotq(qx, w8 + r0 * cols, n, sums);
        for (int64_t i = 0; i < n; ++i) {
            const int64_t r = r0 + i;
            float v = !w.scale ? f.dot(wf + r * cols, x, cols)
                      : (int8_x ? sums[i] : f.dot8(x, w8 + r * cols, cols)) * w.scale[r];
            if (bias) v += bias[r];
            y[r] = accumulate ? y[r] + v : v;
        }
    }
}

// y[r] (+)= W[r] . x for this thread's share of W's rows, then the barrier that makes y whole for
// every thread. With f.dotq, int8 rows' x is quantized first (each thread its own copy into qx: a
// few thousand values, cheaper than a barrier).
template <class Team>
void product(Team& team, const Form& f, Matrix w, const float* x, float* y, int64_t rows, int64_t cols,
             const float* bias, bool accumulate, QuantizedX& qx) {
    int64_t begin, end;
    share(rows, team.id(), team.size(), begin, end);
    const bool int8_x = w.scale && f.dotq;
    if (int8_x) f.quantize(x, cols, qx);
    rows_into(f, w, x, y, begin, end, cols, bias, accumulate, qx, int8_x);
    team.barrier();
}

// One matrix of several multiplied at once (a token's routed experts): y = W . x.
struct Segment {
    Matrix w;
    const float* x;
    float* y;
};

// product for n matrices of the same shape, their rows shared among the threads as one matrix of
// n * rows (one barrier for all, instead of one each).
template <class Team>
void product_segments(Team& team, const Form& f, const Segment* seg, int64_t n, int64_t rows, int64_t cols,
                      QuantizedX& qx) {
    int64_t begin, end;
    share(n * rows, team.id(), team.size(), begin, end);
    for (int64_t j = begin / rows; j < n && j * rows < end; ++j) {
        const int64_t from = std::max(begin, j * rows) - j * rows, to = std::min(end, (j + 1) * rows) - j * rows;
        const bool int8_x = seg[j].w.scale && f.dotq;
        if (int8_x) f.quantize(seg[j].x, cols, qx);
        rows_into(f, seg[j].w, seg[j].x, seg[j].y, from, to, cols, nullptr, false, qx, int8_x);
    }
    team.barrier();
}

// Expert e of experts stacked [experts, rows, cols] (their scales [experts, rows]).
inline Matrix expert(Matrix stacked, int64_t e, int64_t rows, int64_t cols) {
    const int64_t item = stacked.scale ? 1 : 4;
    return {static_cast<const char*>(stacked.values) + e * rows * cols * item,
            stacked.scale ? stacked.scale + e * rows : nullptr};
}

// The threads of a step as OpenMP runs them (torch-cpu: torch's own OpenMP threads).
struct OmpTeam {
    int id() const { return omp_get_thread_num(); }
    int size() const { return omp_get_num_threads(); }
    void barrier() const {
#pragma omp barrier
    }
};

// out = norm_w * (x * rsqrt(mean(x^2) + eps)), as llama_torch.rms_norm in float32.
inline void rms_norm(const float* x, const float* norm_w, float* out, int64_t n, double eps) {
    float ss = 0.0f;
    for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
    const float scale = 1.0f / std::sqrt(ss / static_cast<float>(n) + static_cast<float>(eps));
    for (int64_t i = 0; i < n; ++i) out[i] = norm_w[i] * (x[i] * scale);
}

// x * cos + rotate_half(x) * sin for one head (split-half layout, as HF's Llama).
inline void rotate(float* x, const float* cos, const float* sin, int64_t hd) {
    const int64_t half = hd / 2;
    for (int64_t i = 0; i < half; ++i) {
        const float a = x[i], b = x[i + half];
        x[i] = a * cos[i] + (-b) * sin[i];
        x[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}

// A mixture-of-experts layer (router set): w13, w2 are its experts stacked [experts, 2 inter,
// hidden] and [experts, hidden, inter] (scales [experts, rows]), the router float32 [experts, hidden].
struct Layer {
    const float *ln1, *bqkv, *ln2;  // bqkv: nullptr where there is none
    Matrix wqkv, wo, w13, w2;
    float *k, *v;  // the cache, written at the step's position
    const float* router;  // nullptr: a dense MLP
};

// Shapes as HF names them; keys_t: keys held [kv_heads, hd, max_seq] (jax-cpu's layout), else
// [kv_heads, max_seq, hd] like the values.
struct Model {
    int64_t layers, vocab, hidden, heads, kv_heads, hd, inter, max_seq;
    bool keys_t;
    double eps;
    const float *embed, *norm, *cos, *sin;  // cos, sin: [max_seq, hd]
    Matrix head;
    const Layer* layer;
    // Mixture-of-experts layers (Mixtral's and Qwen-MoE's router: softmax over every expert, the
    // top_k best, renormalised to sum 1 where norm_topk): each layer's chosen experts, best first,
    // go to routes [layers, top_k].
    int64_t experts = 0, top_k = 0;
    bool norm_topk = false;
    int32_t* routes = nullptr;
};

// The buffers every thread of a step shares.
struct Shared {
    std::vector<float> x, normed, qkv, att, gate_up, down;  // down: the routed experts' outputs
};

// The top_k experts for normed input x and their weights, as llama_torch.route computes them in
// float32 (softmax over all, the k largest, best first; ties to the lower expert). Every thread
// computes it for itself: the same inputs and code give the same choice in each.
inline void route(const Form& f, const Model& m, const float* router, const float* x, int32_t* chosen, float* weight,
                  std::vector<float>& probs) {
    float top = -INFINITY, total = 0.0f;
    for (int64_t e = 0; e < m.experts; ++e) top = std::max(top, probs[e] = f.dot(router + e * m.hidden, x, m.hidden));
    for (int64_t e = 0; e < m.experts; ++e) total += (probs[e] = std::exp(probs[e] - top));
    for (int64_t e = 0; e < m.experts; ++e) probs[e] /= total;
    float sum = 0.0f;
    for (int64_t j = 0; j < m.top_k; ++j) {
        int64_t best = -1;
        for (int64_t e = 0; e < m.experts; ++e)
            if ((best < 0 || probs[e] > probs[best]) && std::find(chosen, chosen + j, e) == chosen + j) best = e;
        chosen[j] = static_cast<int32_t>(best);
        sum += (weight[j] = probs[best]);
    }
    if (m.norm_topk)
        for (int64_t j = 0; j < m.top_k; ++j) weight[j] /= sum;
}

// One thread's part of a step (every thread of `team` calls it): logits [vocab] for `token` at
// position `pos` (both checked by the caller).
template <class Team>
void step_in(Team& team, const Model& m, int64_t token, int64_t pos, float* logits, const Form& f, Shared& s) {
    const Dot dot = f.dot;
    const int64_t hidden = m.hidden, hd = m.hd, heads = m.heads, kv_heads = m.kv_heads, inter = m.inter;
    const int64_t q_width = heads * hd, kv_width = kv_heads * hd, group = heads / kv_heads, S = m.max_seq;
    const float* cos = m.cos + pos * hd;
    const float* sin = m.sin + pos * hd;
    const float att_scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const bool first = team.id() == 0;
    const int64_t k = m.experts ? m.top_k : 1;
    std::vector<float> act(k * inter), scores(pos + 1), probs(m.experts), weight(k);  // each thread's own
    std::vector<int32_t> chosen(k);
    std::vector<Segment> seg(k);
    QuantizedX qx;
    float *x = s.x.data(), *normed = s.normed.data(), *qkv = s.qkv.data(), *att = s.att.data(), *gate_up = s.gate_up.data();
    for (int64_t l = 0; l < m.layers; ++l) {
        const Layer& w = m.layer[l];
        if (first) rms_norm(x, w.ln1, normed, hidden, m.eps);
        team.barrier();
        product(team, f, w.wqkv, normed, qkv, q_width + 2 * kv_width, hidden, w.bqkv, false, qx);
        if (first) {
            for (int64_t h = 0; h < heads + kv_heads; ++h) rotate(qkv + h * hd, cos, sin, hd);
            for (int64_t h = 0; h < kv_heads; ++h) {
                const float* k = qkv + q_width + h * hd;
                if (m.keys_t)
                    for (int64_t d = 0; d < hd; ++d) w.k[(h * hd + d) * S + pos] = k[d];
                else
                    std::copy_n(k, hd, w.k + (h * S + pos) * hd);
                std::copy_n(qkv + q_width + kv_width + h * hd, hd, w.v + (h * S + pos) * hd);
            }
        }
        team.barrier();
        int64_t h0, h1;
        share(heads, team.id(), team.size(), h0, h1);
        for (int64_t h = h0; h < h1; ++h) {
            const float* q = qkv + h * hd;
            const float* keys = w.k + (h / group) * S * hd;
            const float* values = w.v + (h / group) * S * hd;
            if (m.keys_t) {  // one position per lane: the sum over d runs down the rows
                std::fill_n(scores.data(), pos + 1, 0.0f);
                for (int64_t d = 0; d < hd; ++d) f.axpy(q[d], keys + d * S, scores.data(), pos + 1);
                for (int64_t j = 0; j <= pos; ++j) scores[j] *= att_scale;
            } else {
                for (int64_t j = 0; j <= pos; ++j) scores[j] = dot(keys + j * hd, q, hd) * att_scale;
            }
            float top = -INFINITY;
            for (int64_t j = 0; j <= pos; ++j) top = std::max(top, scores[j]);
            float total = 0.0f;
            for (int64_t j = 0; j <= pos; ++j) total += (scores[j] = std::exp(scores[j] - top));
            float* o = att + h * hd;
            std::fill_n(o, hd, 0.0f);
            for (int64_t j = 0; j <= pos; ++j) f.axpy(scores[j] / total, values + j * hd, o, hd);
        }
        team.barrier();
        product(team, f, w.wo, att, x, hidden, q_width, nullptr, true, qx);
        if (first) rms_norm(x, w.ln2, normed, hidden, m.eps);
        team.barrier();
        if (w.router) {  // the routed experts' gate/up rows as one product, then their down rows
            route(f, m, w.router, normed, chosen.data(), weight.data(), probs);
            if (first && m.routes) std::copy_n(chosen.data(), k, m.routes + l * k);
            for (int64_t j = 0; j < k; ++j)
                seg[j] = {expert(w.w13, chosen[j], 2 * inter, hidden), normed, gate_up + j * 2 * inter};
            product_segments(team, f, seg.data(), k, 2 * inter, hidden, qx);
            for (int64_t j = 0; j < k; ++j) {
                const float* gu = gate_up + j * 2 * inter;
                for (int64_t i = 0; i < inter; ++i) act[j * inter + i] = gu[i] / (1.0f + std::exp(-gu[i])) * gu[inter + i];
                seg[j] = {expert(w.w2, chosen[j], hidden, inter), act.data() + j * inter, s.down.data() + j * hidden};
            }
            product_segments(team, f, seg.data(), k, hidden, inter, qx);
            if (first)  // weighted as llama_torch's routed_experts: sum over j of weight_j * y_j
                for (int64_t r = 0; r < hidden; ++r) {
                    float y = 0.0f;
                    for (int64_t j = 0; j < k; ++j) y += weight[j] * s.down[j * hidden + r];
                    x[r] += y;
                }
            continue;
        }
        product(team, f, w.w13, normed, gate_up, 2 * inter, hidden, nullptr, false, qx);
        for (int64_t i = 0; i < inter; ++i) {  // SiLU(gate) * up, each thread for itself
            const float g = gate_up[i];
            act[i] = g / (1.0f + std::exp(-g)) * gate_up[inter + i];
        }
        product(team, f, w.w2, act.data(), x, hidden, inter, nullptr, true, qx);
    }
    if (first) rms_norm(x, m.norm, normed, hidden, m.eps);
    team.barrier();
    product(team, f, m.head, normed, logits, m.vocab, hidden, nullptr, false, qx);
}

inline Shared shared_for(const Model& m, int64_t token) {
    const int64_t qkv = (m.heads + 2 * m.kv_heads) * m.hd;
    return {std::vector<float>(m.embed + token * m.hidden, m.embed + (token + 1) * m.hidden),
            std::vector<float>(m.hidden), std::vector<float>(qkv), std::vector<float>(m.heads * m.hd),
            std::vector<float>(2 * m.inter * std::max<int64_t>(m.top_k, 1)),
            std::vector<float>(m.hidden * std::max<int64_t>(m.top_k, 1))};
}

// A step on `threads` OpenMP threads (torch-cpu's: the calling thread's team).
inline void step(const Model& m, int64_t token, int64_t pos, float* logits, int64_t form, int64_t int8_dot,
                 int threads) {
    const Form f = form_for(form, int8_dot);
    Shared s = shared_for(m, token);
#pragma omp parallel num_threads(threads)
    {
        OmpTeam team;
        step_in(team, m, token, pos, logits, f, s);
    }
}

}  // namespace infercost_decode_f32
