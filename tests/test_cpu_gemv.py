"""infercost's native CPU code: the float32 one-row product of torch's extension in every form the CPU
runs against a float64 product, the compiled decode step taking it, and the read sweep's C reader."""

from __future__ import annotations

import numpy as np
import pytest

from infercost.hardware.host import cpu_flags

# Widths under one vector, with a tail after the 64-wide loop, a down projection's, and one
# that is not a multiple of 8; rows fewer than a thread's grain and many.
SHAPES = [(3, 5), (37, 75), (130, 2048), (1000, 232), (9, 768)]


def torch_forms():
    from infercost.kernels import gemv_torch_cpu
    return [n for n, (_, needs) in gemv_torch_cpu.FORMS.items() if all(f in cpu_flags() for f in needs)]


@pytest.mark.parametrize("out_features, k", SHAPES)
def test_every_form_of_the_torch_float32_gemv_matches_float64(out_features, k):
    import torch

    from infercost.kernels import gemv_torch_cpu
    if not gemv_torch_cpu.available():
        pytest.skip(str(gemv_torch_cpu.why_not()))
    rng = np.random.default_rng(out_features * k)
    w = rng.standard_normal((out_features, k)).astype(np.float32)
    x = rng.standard_normal((1, 1, 2 * k)).astype(np.float32)[..., ::2]  # a strided view, as a slice gives
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    best = gemv_torch_cpu.form()
    try:
        for form in torch_forms():
            assert gemv_torch_cpu.use(form)
            y = gemv_torch_cpu.f32_gemv(torch.from_numpy(x), torch.from_numpy(w)).numpy()
            assert y.shape == (1, 1, out_features)
            # float32 sums of k products: error grows like sqrt(k) ulps of the terms' size
            assert np.abs(y - ref).max() / np.abs(ref).max() < 1e-5, form
    finally:
        gemv_torch_cpu.use(best)


def test_the_torch_float32_gemv_refuses_what_it_cannot_read():
    import torch

    from infercost.kernels import gemv_torch_cpu
    if not gemv_torch_cpu.available():
        pytest.skip(str(gemv_torch_cpu.why_not()))
    w = torch.ones(8, 16)
    with pytest.raises(RuntimeError, match="one row of x"):
        gemv_torch_cpu.f32_gemv(torch.ones(2, 16), w)
    with pytest.raises(RuntimeError, match="contiguous float32"):
        gemv_torch_cpu.f32_gemv(torch.ones(1, 8), w.t())



def test_float32_decode_takes_infercost_gemv_and_matches_the_float64_reference(monkeypatch):
    # The compiled batch-1 step with the kernel against the reference model in float64, and its
    # launch naming the kernel; with the switch set to the framework, inductor's own loop.
    from infercost.bench.backend import open_backend
    from infercost.kernels import llama, llama_ref, models
    cfg = models.CONFIGS["tiny"]
    from infercost.kernels import gemv_torch_cpu
    if not gemv_torch_cpu.available():
        pytest.skip(str(gemv_torch_cpu.why_not()))
    backend = open_backend("torch-cpu", threads=2)
    backend.configure("float32", False)
    prompt = np.random.default_rng(3).integers(0, cfg.vocab_size, (1, 6))
    w64 = {k: v.astype(np.float64) for k, v in llama.seeded_weights_numpy(cfg, seed=0).items()}
    ref = llama_ref.forward(cfg, w64, np.concatenate([prompt, [[7]]], axis=1))[:, -1]
    for switch, said in (("", "float32 rows by infercost's GEMV"), ("framework", "float32 rows by inductor's loop")):
        monkeypatch.setenv("INFERCOST_CPU_GEMV", switch)
        runner = backend.load_model(cfg, "float32", 1, 16, seed=0)
        runner.prefill_step(prompt, last_only=True)()
        got = backend.fetch(runner.decode_step(np.array([[7]]), 6)())[:, -1]
        assert said in runner.launch
        assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-5


def test_the_read_sweeps_c_reader_reads_every_byte():
    # It returns the OR of every 8-byte word and tail byte: any byte left unread can change it.
    from infercost.bench import sweep
    read, why = sweep.native_reader()
    if read is None:
        pytest.skip(why)
    rng = np.random.default_rng(0)
    for nbytes in (0, 7, 8, 255, 256, 4099, 1 << 20):
        buf = np.zeros(nbytes, np.uint8)
        assert read(buf.ctypes.data, nbytes) == 0
        for at in {0, nbytes // 2, nbytes - 1} if nbytes else ():
            buf[:] = 0
            buf[at] = rng.integers(1, 256)
            got = read(buf.ctypes.data, nbytes)
            word = np.zeros(8, np.uint8)
            word[at % 8] = buf[at]
            want = int(word.view(np.uint64)[0]) if at < nbytes - nbytes % 8 else int(buf[at])
            # a tail byte (past the last whole word) is OR-ed in as a byte of its own
            assert got == want, (nbytes, at)


def test_without_a_c_compiler_the_sweep_reads_with_numpy_and_says_so(monkeypatch, tmp_path):
    from infercost.bench import sweep
    monkeypatch.setenv("CC", str(tmp_path / "no-compiler"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    sweep.native_reader.cache_clear()
    try:
        assert sweep.native_reader()[0] is None and "did not run" in sweep.native_reader()[1]
        assert sweep.reader_name().startswith("numpy's max")
        rate, basis = sweep.host_read_bandwidth([np.ones(1 << 20, np.float32)], 1)
        assert rate > 0 and "numpy's max" in basis
        assert not list(tmp_path.rglob("*.so"))  # nothing half-built left in the cache
    finally:
        sweep.native_reader.cache_clear()
