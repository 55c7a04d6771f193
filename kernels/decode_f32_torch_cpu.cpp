// torch.ops.infercost.decode_f32: decode_f32_cpu.h's step on a torch model's tensors
// (kernels/decode_f32_torch_cpu.py lists them).
#include <ATen/core/Tensor.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "decode_f32_cpu.h"

namespace {

// The tensors, in this order: embed [V, H], head [V, H], head's scales [V] (or an empty tensor), norm
// [H], cos [S, hd], sin [S, hd], then per layer ln1 [H], wqkv [(nh + 2 nkv) hd, H] and its scales,
// bqkv (or an empty tensor), wo [H, nh hd] and its scales, ln2 [H], w13 [2 I, H] and its scales, w2
// [H, I] and its scales, k cache [1, nkv, S, hd], v cache [1, nkv, S, hd], router [E, H] (or an empty
// tensor: a dense MLP; with a router, w13 and w2 are the experts stacked [E, 2 I, H] and [E, H, I],
// scales [E, rows]). Contiguous, on the CPU; a matrix is float32 with an empty scales tensor, or int8
// with float32 scales a row; all else float32.
constexpr int64_t FIXED = 6, PER_LAYER = 14;

const float* floats(const at::Tensor& t) { return t.numel() ? t.data_ptr<float>() : nullptr; }

infercost_decode_f32::Matrix matrix(const at::Tensor& values, const at::Tensor& scale) {
    if (!scale.numel()) {
        TORCH_CHECK(values.scalar_type() == at::kFloat, "decode_f32: a matrix without scales must be float32");
        return {values.data_ptr<float>(), nullptr};
    }
    TORCH_CHECK(values.scalar_type() == at::kChar && values.dim() >= 2 && scale.numel() * values.size(-1) == values.numel(),
                "decode_f32: a matrix with scales must be int8 with one scale a row");
    return {values.data_ptr<int8_t>(), scale.data_ptr<float>()};
}

std::tuple<at::Tensor, at::Tensor> decode_f32(const at::Tensor& token, const at::Tensor& pos, at::TensorList t,
                                              int64_t heads, int64_t kv_heads, double eps, int64_t top_k,
                                              int64_t norm_topk, int64_t form, int64_t int8_dot) {
    TORCH_CHECK(t.size() > FIXED && (t.size() - FIXED) % PER_LAYER == 0, "decode_f32: wrong number of tensors");
    for (const auto& x : t)
        TORCH_CHECK((x.scalar_type() == at::kFloat || x.scalar_type() == at::kChar) && x.is_contiguous() && x.is_cpu(),
                    "decode_f32: every tensor must be contiguous float32 (or int8 weights) on the CPU");
    infercost_decode_f32::Model m{};
    m.layers = (t.size() - FIXED) / PER_LAYER;
    m.vocab = t[0].size(0), m.hidden = t[0].size(1), m.hd = t[4].size(1), m.max_seq = t[4].size(0);
    const bool moe = t[FIXED + 13].numel() > 0;
    m.heads = heads, m.kv_heads = kv_heads, m.inter = t[FIXED + 7].size(moe ? 1 : 0) / 2, m.keys_t = false, m.eps = eps;
    TORCH_CHECK(t[0].scalar_type() == at::kFloat, "decode_f32: the embedding must be float32");
    m.embed = t[0].data_ptr<float>(), m.head = matrix(t[1], t[2]), m.norm = t[3].data_ptr<float>();
    m.cos = t[4].data_ptr<float>(), m.sin = t[5].data_ptr<float>();
    std::vector<infercost_decode_f32::Layer> layers(m.layers);
    for (int64_t l = 0; l < m.layers; ++l) {
        const at::Tensor* w = &t[FIXED + l * PER_LAYER];
        layers[l] = {floats(w[0]), floats(w[3]), floats(w[6]), matrix(w[1], w[2]), matrix(w[4], w[5]),
                     matrix(w[7], w[8]), matrix(w[9], w[10]), w[11].data_ptr<float>(), w[12].data_ptr<float>(),
                     floats(w[13])};
        TORCH_CHECK((w[13].numel() > 0) == moe && (!moe || (w[7].dim() == 3 && w[9].dim() == 3 && w[13].size(0) == w[7].size(0))),
                    "decode_f32: every layer a mixture of experts (stacked experts, a router a layer) or none");
    }
    at::Tensor routes = at::empty({moe ? m.layers : 0, 1, moe ? top_k : 1}, t[0].options().dtype(at::kInt));
    if (moe) {
        m.experts = t[FIXED + 13].size(0), m.top_k = top_k, m.norm_topk = norm_topk != 0;
        m.routes = routes.data_ptr<int32_t>();
        TORCH_CHECK(top_k >= 1 && top_k <= m.experts, "decode_f32: top_k ", top_k, " outside 1..", m.experts);
    }
    m.layer = layers.data();
    const int64_t p = pos.item<int64_t>(), tok = token.item<int64_t>();
    TORCH_CHECK(p >= 0 && p < m.max_seq, "decode_f32: position ", p, " is outside the cache of ", m.max_seq);
    TORCH_CHECK(tok >= 0 && tok < m.vocab, "decode_f32: token ", tok, " is outside the vocabulary of ", m.vocab);
    at::Tensor logits = at::empty({1, 1, m.vocab}, t[0].options());
    infercost_decode_f32::step(m, tok, p, logits.data_ptr<float>(), form, int8_dot, static_cast<int>(at::get_num_threads()));
    return {logits, routes};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(infercost, m) {
    m.def("decode_f32(Tensor token, Tensor pos, Tensor[] tensors, int heads, int kv_heads, float eps, int top_k, "
          "int norm_topk, int form, int int8_dot) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(infercost, CPU, m) {
    m.impl("decode_f32", &decode_f32);
}
