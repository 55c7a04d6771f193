// infercost_decode_f32 as an XLA FFI handler: decode_f32_cpu.h's step on a jax-cpu model's buffers
// (kernels/decode_f32_jax_cpu.py lists them). The caches come in as operands and go out as results
// aliased to them, so the step writes its key and value in place.
#include <cstdint>
#include <vector>

#include "decode_f32_cpu.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Operands: token [1, 1] int32, pos [] int32, then embed, head, norm, cos, sin, then per layer ln1,
// wqkv, (bqkv where has_bias), wo, ln2, w13, w2, then per layer its keys [1, nkv, hd, S] and values
// [1, nkv, S, hd]. Results: logits [1, 1, V], then the caches in the same order (aliased).
ffi::Error DecodeF32(ffi::Buffer<ffi::S32> token, ffi::Buffer<ffi::S32> pos, ffi::RemainingArgs args,
                     ffi::RemainingRets rets, int64_t heads, int64_t kv_heads, double eps, int64_t has_bias,
                     int64_t form, int64_t threads) {
    const int64_t per_layer = has_bias ? 7 : 6, fixed = 5;
    const int64_t layers = static_cast<int64_t>(rets.size()) / 2;
    if (layers < 1 || static_cast<int64_t>(args.size()) != fixed + layers * (per_layer + 2))
        return ffi::Error::InvalidArgument("infercost_decode_f32: wrong number of operands");
    auto arg = [&](int64_t i) { return reinterpret_cast<float*>(args.get<ffi::AnyBuffer>(i).value().untyped_data()); };
    auto ret = [&](int64_t i) { return reinterpret_cast<float*>((*rets.get<ffi::AnyBuffer>(i).value()).untyped_data()); };
    for (size_t i = 0; i < args.size(); ++i)
        if (args.get<ffi::AnyBuffer>(i).value().element_type() != ffi::DataType::F32)
            return ffi::Error::InvalidArgument("infercost_decode_f32: every weight and cache must be float32");
    auto embed = args.get<ffi::AnyBuffer>(0).value().dimensions();
    auto cos = args.get<ffi::AnyBuffer>(3).value().dimensions();
    infercost_decode_f32::Model m{};
    m.layers = layers, m.vocab = embed[0], m.hidden = embed[1], m.max_seq = cos[0], m.hd = cos[1];
    m.heads = heads, m.kv_heads = kv_heads, m.keys_t = true, m.eps = eps;
    m.inter = args.get<ffi::AnyBuffer>(fixed + 5 - (has_bias ? 0 : 1)).value().dimensions()[0] / 2;
    m.embed = arg(0), m.head = {arg(1), nullptr}, m.norm = arg(2), m.cos = arg(3), m.sin = arg(4);
    std::vector<infercost_decode_f32::Layer> layer(layers);
    for (int64_t l = 0; l < layers; ++l) {
        int64_t i = fixed + l * per_layer;
        layer[l].ln1 = arg(i++), layer[l].wqkv = {arg(i++), nullptr};
        layer[l].bqkv = has_bias ? arg(i++) : nullptr;
        layer[l].wo = {arg(i++), nullptr}, layer[l].ln2 = arg(i++);
        layer[l].w13 = {arg(i++), nullptr}, layer[l].w2 = {arg(i++), nullptr};
        layer[l].k = ret(1 + 2 * l), layer[l].v = ret(2 + 2 * l);
    }
    m.layer = layer.data();
    const int64_t p = pos.typed_data()[0], tok = token.typed_data()[0];
    if (p < 0 || p >= m.max_seq) return ffi::Error::InvalidArgument("infercost_decode_f32: position outside the cache");
    if (tok < 0 || tok >= m.vocab) return ffi::Error::InvalidArgument("infercost_decode_f32: token outside the vocabulary");
    infercost_decode_f32::step(m, tok, p, ret(0), form, static_cast<int>(threads));
    return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(InfercostDecodeF32, DecodeF32,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("heads")
                                  .Attr<int64_t>("kv_heads")
                                  .Attr<double>("eps")
                                  .Attr<int64_t>("has_bias")
                                  .Attr<int64_t>("form")
                                  .Attr<int64_t>("threads"));
