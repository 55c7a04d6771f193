// infercost_decode_f32 as an XLA FFI handler: decode_f32_cpu.h's step on a jax-cpu model's buffers
// (kernels/decode_f32_jax_cpu.py lists them). The caches come in as operands and go out as results
// aliased to them, so the step writes its key and value in place.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "decode_f32_cpu.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// The step's threads: the calling thread and threads - 1 of ours, kept for the process. Why not
// OpenMP here: XLA runs a custom call on whichever thread dispatches it (the caller's, or one of
// its own), OpenMP keeps a team a calling thread, and with two teams libgomp throttles its spinning
// (more threads than cores) and every barrier became a sleep and a wake: an int8 step of
// small-125m took 4.4-5.4 ms instead of 2.3-2.4 (2-core EPYC host); a process that also runs torch
// (bench/perf/decode_vs_hf.py) had torch's steps slowed the same way. Our threads spin at a step's
// barriers and sleep between steps (after SPIN_US).
constexpr int SPIN_US = 1000;  // how long an idle thread of ours waits for the next step awake
constexpr int YIELD_AFTER = 1000;  // pauses at a barrier before each turn yields the core

class Pool {
  public:
    explicit Pool(int size) : size_(size) {
        for (int id = 1; id < size; ++id) std::thread([this, id] { serve(id); }).detach();  // live as long as the process
    }
    int size() const { return size_; }

    void barrier() {  // sense-reversing: the last to arrive flips the sense and frees the others
        const int sense = sense_.load(std::memory_order_acquire);
        if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == size_) {
            arrived_.store(0, std::memory_order_relaxed);
            sense_.store(sense ^ 1, std::memory_order_release);
        } else {
            wait([&] { return sense_.load(std::memory_order_acquire) != sense; });
        }
    }

    // Runs job(id) on every thread (the caller is id 0); returns when all have finished it.
    void run(const std::function<void(int)>& job) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            job_ = &job;
            finished_.store(0, std::memory_order_relaxed);
            generation_.fetch_add(1, std::memory_order_release);
        }
        cv_.notify_all();
        job(0);
        wait([&] { return finished_.load(std::memory_order_acquire) == size_ - 1; });
    }

  private:
    // Until done(): pauses, then after YIELD_AFTER of them a yield each turn. Pausing alone held a
    // core while the thread being waited for sat preempted on a busy host: an int8 small-125m step
    // with another process keeping a core busy took 8.9 ms on average (p99 139 ms) against 6.4
    // (p99 15) with the yield; on an idle host the same (2-core EPYC VM, 2026-12-07).
    template <class Done>
    static void wait(Done done) {
        for (int spins = 0; !done();) {
            if (spins < YIELD_AFTER) pause(), ++spins;
            else std::this_thread::yield();
        }
    }

    static void pause() {
#if defined(__x86_64__)
        _mm_pause();
#endif
    }

    void serve(int id) {
        uint64_t seen = 0;
        for (;;) {
            // Spin for SPIN_US, then sleep: a decode loop's next step comes 0.2-0.4 ms after the last
            // (XLA's dispatch of ~150 buffers from caches the step has just flushed, the logits'
            // fetch, sampling). Spinning 20000 pauses (under that, here) slept and woke ~55 us a step
            // later; with 1-2 ms a small-125m step was 1.2-1.4% faster (2-core EPYC VM, 2026-12-07).
            const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(SPIN_US);
            for (int spins = 1; generation_.load(std::memory_order_acquire) == seen; ++spins) {
                pause();
                if (spins % 256 == 0 && std::chrono::steady_clock::now() > until) break;
            }
            if (generation_.load(std::memory_order_acquire) == seen) {
                std::unique_lock<std::mutex> lock(mu_);
                cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
            }
            seen = generation_.load(std::memory_order_acquire);
            (*job_)(id);
            finished_.fetch_add(1, std::memory_order_acq_rel);
        }
    }

    const int size_;
    std::mutex mu_;
    std::condition_variable cv_;
    const std::function<void(int)>* job_ = nullptr;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> finished_{0}, arrived_{0}, sense_{0};
};

struct PoolTeam {  // one thread's view of the pool, as decode_f32_cpu.h's step_in takes it
    Pool* pool;
    int thread;
    int id() const { return thread; }
    int size() const { return pool->size(); }
    void barrier() const { pool->barrier(); }
};

std::mutex pool_mu;  // one step at a time, on the pool of the size asked for

Pool& pool_of(int size) {
    static Pool* pool = nullptr;  // never destroyed: its threads outlive static teardown
    if (!pool || pool->size() != size) pool = new Pool(size);
    return *pool;
}

// Operands: token [1, 1] int32, pos [] int32, then embed, head, norm, cos, sin, then per layer ln1,
// wqkv, (bqkv where has_bias), wo, ln2, w13, w2, then every layer's keys [layers, 1, nkv, hd, S] and
// values [layers, 1, nkv, S, hd] (stacked: each buffer costs XLA's dispatch time; with two a layer
// XLA took 0.40-0.50 ms around a small-125m step, stacked 0.21-0.30, 5-6% of an int8 step). With
// `int8`, every matrix (head, wqkv, wo, w13, w2) is int8 and followed by its rows' float32 scales.
// With `top_k` > 0 every layer is a mixture of experts: w13 and w2 are its experts stacked
// [E, 2 I, H] and [E, H, I] (scales [E, rows]), followed by its router [E, H]. Results: logits
// [1, 1, V], then the keys and values (aliased), then with `top_k` the experts each layer chose
// [layers, 1, top_k] int32.
ffi::Error DecodeF32(ffi::Buffer<ffi::S32> token, ffi::Buffer<ffi::S32> pos, ffi::RemainingArgs args,
                     ffi::RemainingRets rets, int64_t heads, int64_t kv_heads, double eps, int64_t has_bias,
                     int64_t int8, int64_t top_k, int64_t norm_topk, int64_t form, int64_t int8_dot, int64_t threads) {
    const int64_t moe = top_k > 0 ? 1 : 0;
    const int64_t scales = int8 ? 1 : 0, per_layer = 6 + (has_bias ? 1 : 0) + 4 * scales + moe, fixed = 5 + scales;
    if (static_cast<int64_t>(rets.size()) != 3 + moe)
        return ffi::Error::InvalidArgument("infercost_decode_f32: wrong number of results");
    auto keys = (*rets.get<ffi::AnyBuffer>(1).value()).dimensions();
    auto values = (*rets.get<ffi::AnyBuffer>(2).value()).dimensions();
    const int64_t layers = keys.size() == 5 ? keys[0] : 0;
    if (layers < 1 || values.size() != 5 || values[0] != layers ||
        static_cast<int64_t>(args.size()) != fixed + layers * per_layer + 2)
        return ffi::Error::InvalidArgument("infercost_decode_f32: wrong number of operands");
    auto buffer = [&](int64_t i) { return args.get<ffi::AnyBuffer>(i).value(); };
    auto arg = [&](int64_t i) { return reinterpret_cast<float*>(buffer(i).untyped_data()); };
    auto ret = [&](int64_t i) { return reinterpret_cast<float*>((*rets.get<ffi::AnyBuffer>(i).value()).untyped_data()); };
    int64_t i = 0;
    bool types_ok = true;
    auto floats = [&]() {
        types_ok &= buffer(i).element_type() == ffi::DataType::F32;
        return arg(i++);
    };
    auto matrix = [&]() -> infercost_decode_f32::Matrix {
        if (!int8) return {floats(), nullptr};
        types_ok &= buffer(i).element_type() == ffi::DataType::S8;
        const void* values = buffer(i++).untyped_data();
        return {values, floats()};
    };
    auto embed = buffer(0).dimensions();
    auto cos = buffer(3 + scales).dimensions();
    infercost_decode_f32::Model m{};
    m.layers = layers, m.vocab = embed[0], m.hidden = embed[1], m.max_seq = cos[0], m.hd = cos[1];
    m.heads = heads, m.kv_heads = kv_heads, m.keys_t = true, m.eps = eps;
    m.embed = floats(), m.head = matrix(), m.norm = floats(), m.cos = floats(), m.sin = floats();
    std::vector<infercost_decode_f32::Layer> layer(layers);
    for (int64_t l = 0; l < layers; ++l) {
        layer[l].ln1 = floats(), layer[l].wqkv = matrix();
        layer[l].bqkv = has_bias ? floats() : nullptr;
        layer[l].wo = matrix(), layer[l].ln2 = floats();
        if (l == 0) m.inter = buffer(i).dimensions()[moe] / 2;
        if (moe && (buffer(i).dimensions().size() != 3 || buffer(i + 1 + scales).dimensions().size() != 3))
            return ffi::Error::InvalidArgument("infercost_decode_f32: experts must be stacked [experts, rows, cols]");
        layer[l].w13 = matrix(), layer[l].w2 = matrix();
        if (moe) {
            if (l == 0) m.experts = buffer(i).dimensions()[0];
            layer[l].router = floats();
        }
        const int64_t cache = keys[2] * keys[3] * keys[4];  // one layer's keys (and values)
        layer[l].k = ret(1) + l * cache, layer[l].v = ret(2) + l * cache;
    }
    for (; i < static_cast<int64_t>(args.size()); ++i) types_ok &= buffer(i).element_type() == ffi::DataType::F32;
    if (!types_ok)
        return ffi::Error::InvalidArgument("infercost_decode_f32: weights and caches must be float32 (matrices int8 with `int8`)");
    m.layer = layer.data();
    if (moe) {
        if (top_k > m.experts) return ffi::Error::InvalidArgument("infercost_decode_f32: top_k above the experts");
        m.top_k = top_k, m.norm_topk = norm_topk != 0;
        m.routes = reinterpret_cast<int32_t*>((*rets.get<ffi::AnyBuffer>(3).value()).untyped_data());
    }
    const int64_t p = pos.typed_data()[0], tok = token.typed_data()[0];
    if (p < 0 || p >= m.max_seq) return ffi::Error::InvalidArgument("infercost_decode_f32: position outside the cache");
    if (tok < 0 || tok >= m.vocab) return ffi::Error::InvalidArgument("infercost_decode_f32: token outside the vocabulary");
    float* logits = ret(0);
    const infercost_decode_f32::Form f = infercost_decode_f32::form_for(form, int8_dot);
    infercost_decode_f32::Shared shared = infercost_decode_f32::shared_for(m, tok);
    std::lock_guard<std::mutex> lock(pool_mu);
    Pool& pool = pool_of(static_cast<int>(std::max<int64_t>(threads, 1)));
    pool.run([&](int id) {
        PoolTeam team{&pool, id};
        infercost_decode_f32::step_in(team, m, tok, p, logits, f, shared);
    });
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
                                  .Attr<int64_t>("int8")
                                  .Attr<int64_t>("top_k")
                                  .Attr<int64_t>("norm_topk")
                                  .Attr<int64_t>("form")
                                  .Attr<int64_t>("int8_dot")
                                  .Attr<int64_t>("threads"));
