// torch.ops.infercost.decode_f32: decode_f32_cpu.h's step on a torch model's tensors
// (kernels/decode_f32_torch_cpu.py lists them).
#include <ATen/core/Tensor.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "decode_f32_cpu.h"

namespace {

// The tensors, in this order: embed [V, H], head [V, H], norm [H], cos [S, hd], sin [S, hd], then
// per layer ln1 [H], wqkv [(nh + 2 nkv) hd, H], bqkv (or an empty tensor), wo [H, nh hd], ln2 [H],
// w13 [2 I, H], w2 [H, I], k cache [1, nkv, S, hd], v cache [1, nkv, S, hd]. Float32, contiguous.
constexpr int64_t FIXED = 5, PER_LAYER = 9;

at::Tensor decode_f32(const at::Tensor& token, const at::Tensor& pos, at::TensorList t, int64_t heads,
                      int64_t kv_heads, double eps, int64_t form) {
    TORCH_CHECK(t.size() > FIXED && (t.size() - FIXED) % PER_LAYER == 0, "decode_f32: wrong number of tensors");
    for (const auto& x : t)
        TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.is_cpu(),
                    "decode_f32: every tensor must be contiguous float32 on the CPU");
    infercost_decode_f32::Model m{};
    m.layers = (t.size() - FIXED) / PER_LAYER;
    m.vocab = t[0].size(0), m.hidden = t[0].size(1), m.hd = t[3].size(1), m.max_seq = t[3].size(0);
    m.heads = heads, m.kv_heads = kv_heads, m.inter = t[FIXED + 5].size(0) / 2, m.keys_t = false, m.eps = eps;
    m.embed = t[0].data_ptr<float>(), m.head = t[1].data_ptr<float>(), m.norm = t[2].data_ptr<float>();
    m.cos = t[3].data_ptr<float>(), m.sin = t[4].data_ptr<float>();
    std::vector<infercost_decode_f32::Layer> layers(m.layers);
    for (int64_t l = 0; l < m.layers; ++l) {
        const at::Tensor* w = &t[FIXED + l * PER_LAYER];
        layers[l] = {w[0].data_ptr<float>(), w[1].data_ptr<float>(), w[2].numel() ? w[2].data_ptr<float>() : nullptr,
                     w[3].data_ptr<float>(), w[4].data_ptr<float>(), w[5].data_ptr<float>(), w[6].data_ptr<float>(),
                     w[7].data_ptr<float>(), w[8].data_ptr<float>()};
    }
    m.layer = layers.data();
    const int64_t p = pos.item<int64_t>(), tok = token.item<int64_t>();
    TORCH_CHECK(p >= 0 && p < m.max_seq, "decode_f32: position ", p, " is outside the cache of ", m.max_seq);
    TORCH_CHECK(tok >= 0 && tok < m.vocab, "decode_f32: token ", tok, " is outside the vocabulary of ", m.vocab);
    at::Tensor logits = at::empty({1, 1, m.vocab}, t[0].options());
    infercost_decode_f32::step(m, tok, p, logits.data_ptr<float>(), form, static_cast<int>(at::get_num_threads()));
    return logits;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(infercost, m) {
    m.def("decode_f32(Tensor token, Tensor pos, Tensor[] tensors, int heads, int kv_heads, float eps, int form) -> Tensor");
}

TORCH_LIBRARY_IMPL(infercost, CPU, m) {
    m.impl("decode_f32", &decode_f32);
}
