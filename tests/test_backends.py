"""The adapters on CPU: identity, identical inputs across frameworks, timing that sees the work."""

import shutil
import subprocess

import numpy as np
import pytest

from infercost.bench.backend import NAMES, Unavailable, open_backend, probe
from infercost.hardware.host import cpu_model
from infercost.kernels.matmul import Matmul

CPU_BACKENDS = ["torch-cpu", "jax-cpu"]


@pytest.fixture(scope="module", params=CPU_BACKENDS)
def backend(request):
    return open_backend(request.param, threads=1)


XEON = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu avx2 avx512f amx_tile
"""


def test_the_cpu_model_is_read_from_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text(XEON)
    assert cpu_model(tmp_path / "cpuinfo") == "Intel(R) Xeon(R) Platinum 8488C"
    (tmp_path / "arm").write_text("processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd\n")
    assert cpu_model(tmp_path / "arm") != ""  # no "model name" line: the platform's name, never empty


@pytest.mark.skipif(not shutil.which("lscpu"), reason="no lscpu to ask independently")
def test_device_name_is_the_cpu_model_lscpu_reports(backend):
    # lscpu (util-linux) reads the CPU's name by its own route
    out = subprocess.run(["lscpu"], capture_output=True, text=True, env={"LC_ALL": "C"}).stdout
    name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    assert backend.device_name() == name


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_every_cpu_backend_gets_the_same_rounded_inputs(dtype):
    host = Matmul(64, 48, 32, dtype).inputs(seed=3)
    got = [open_backend(name).fetch(open_backend(name).put(host[0], dtype)) for name in CPU_BACKENDS]
    np.testing.assert_array_equal(got[0], got[1])
    if dtype == "float32":
        np.testing.assert_array_equal(got[0], host[0].astype(np.float64))
    else:  # rounding to 16 bits changes values, but by at most half an ulp
        rel = np.abs(got[0] - host[0]) / np.abs(host[0])
        assert 0 < rel.max() <= (2**-8 if dtype == "bfloat16" else 2**-11)


def test_inputs_are_seeded_and_never_zero():
    a1, b1 = Matmul(32, 32, 32, "float32").inputs(seed=7)
    a2, _ = Matmul(32, 32, 32, "float32").inputs(seed=7)
    a3, _ = Matmul(32, 32, 32, "float32").inputs(seed=8)
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, a3)
    assert a1.std() > 0.5 and (a1 == 0).mean() < 0.01 and not np.array_equal(a1, b1)


def test_time_block_grows_with_the_number_of_calls(backend):
    w = Matmul(512, 512, 512, "float32")  # ~1 ms a call: well above dispatch overhead
    args = [backend.put(x, "float32") for x in w.inputs(0)]
    fn = backend.compile(backend.matmul("float32"), args)
    for _ in range(3):
        backend.time_block(fn, args, 2)
    pairs = [(backend.time_block(fn, args, 2), backend.time_block(fn, args, 8)) for _ in range(5)]
    one, four = min(p[0] for p in pairs), min(p[1] for p in pairs)
    # 4x the calls: a timer that misses the work (no sync) would read ~1x; noise on a
    # shared machine can only stretch either side, so only the lower bound is asserted.
    assert four / one > 2.0


def test_probe_reports_available_cpu_backends_and_why_others_are_not():
    for name in NAMES:
        info = probe(name)
        assert info["backend"] == name
        if name in CPU_BACKENDS:
            assert info["available"] and info["device"] == cpu_model()
        elif not info["available"]:
            assert info["reason"]  # a reason, never a blank


def test_unknown_backend_is_unavailable_with_the_valid_names():
    with pytest.raises(Unavailable, match="torch-cpu"):
        open_backend("torch-mps")


def test_tf32_is_refused_off_cuda(backend):
    assert "TF32" in backend.unsupported("float32", tf32=True)
    assert backend.unsupported("float32") is None
