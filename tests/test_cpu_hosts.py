"""CPU host kinds: a dtype the CPU has no arithmetic for is left out of suites and, when asked for,
measured and labelled emulated everywhere it is shown or priced; INFERCOST_CPU_ISA=avx2 makes an
AVX-512 host take an AVX2-only host's paths, so they are tested on any x86 host."""

import json
import os
import subprocess
import sys

import pytest

from infercost.hardware import host

AVX2_ONLY = {**os.environ, "INFERCOST_CPU_ISA": "avx2"}
FAST = ["--min-time", "0.05", "--warmup", "0.05", "--repeats", "3"]


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "infercost.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env or os.environ)


@pytest.mark.parametrize("flags, emulated", [
    ({"avx2", "fma"}, {"bfloat16", "float16"}),                           # an AVX2-only EPYC or Xeon
    ({"avx2", "fma", "avx512f", "avx512_bf16"}, {"float16"}),             # Zen 4/5, Cooper Lake
    ({"avx2", "avx512f", "amx_bf16", "amx_fp16", "avx512_fp16"}, set()),  # Granite Rapids
    ({"asimd", "bf16"}, {"float16"}),                                     # an Arm core with BF16 but no FP16 arithmetic
    ({"asimd", "fphp", "asimdhp", "bf16"}, set()),                        # Graviton 3/4
])
def test_native_dtypes_follow_the_cpu_flags(monkeypatch, flags, emulated):
    monkeypatch.setattr(host, "cpu_flags", lambda: frozenset(flags))
    assert {d for d in ("float32", "bfloat16", "float16") if host.dtype_emulated(d)} == emulated


def test_the_isa_cap_takes_flags_away_and_caps_the_frameworks(monkeypatch):
    monkeypatch.setenv("INFERCOST_CPU_ISA", "avx2")
    host.cpu_flags.cache_clear()
    try:
        assert not any(f.startswith(("avx512", "amx")) for f in host.cpu_flags())
        env = host.isa_env({"XLA_FLAGS": "--xla_foo=1"})
        assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
        assert env["XLA_FLAGS"] == "--xla_foo=1 --xla_cpu_max_isa=AVX2"
        assert env["TORCHINDUCTOR_CACHE_DIR"].endswith("-isa-avx2")  # never a kernel compiled uncapped
    finally:
        monkeypatch.delenv("INFERCOST_CPU_ISA")
        host.cpu_flags.cache_clear()


def test_an_unknown_isa_cap_is_one_line(tmp_path):
    proc = cli("run", "--shape", "8x8x8", "--out", tmp_path / "r.jsonl", env={**os.environ, "INFERCOST_CPU_ISA": "avx9"})
    assert proc.returncode == 2 and "INFERCOST_CPU_ISA" in proc.stderr and "Traceback" not in proc.stderr
    assert len([l for l in proc.stderr.splitlines() if l.strip()]) == 1


@pytest.mark.slow
@pytest.mark.skipif("avx2" not in host.cpu_flags(), reason="not an x86 host with AVX2")
def test_on_an_avx2_only_host_bfloat16_is_left_out_of_suites_and_labelled_when_asked_for(tmp_path):
    out = tmp_path / "r.jsonl"
    # The quick suite's matmuls: bfloat16 is left out, with a note saying how to ask for it.
    proc = cli("run", "--backend", "torch-cpu", "--workload", "matmul", "--out", out, *FAST, env=AVX2_ONLY)
    assert proc.returncode == 0, proc.stderr
    assert "bfloat16 left out of the suite" in " ".join(proc.stdout.split())
    assert {json.loads(l)["case"]["dtype"] for l in out.read_text().splitlines()} == {"float32"}
    # Asked for by name, it is measured, and labelled emulated in the record, the table and the price.
    out2 = tmp_path / "r2.jsonl"
    proc = cli("run", "--backend", "torch-cpu,jax-cpu", "--shape", "64x64x64", "--dtype", "bfloat16", "--out", out2,
               "--price-per-hour", "1", *FAST, env=AVX2_ONLY)
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    records = [json.loads(l) for l in out2.read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert r["case"]["dtype_support"] == "emulated" and r["check"]["passed"]
        assert any("bfloat16 emulated" in w for w in r["warnings"] + r["reasons"])
        assert r["provenance"]["versions"]["cpu_flags"].endswith("(capped by INFERCOST_CPU_ISA=avx2)")
    assert "bfloat16 (emulated)" in said
    if any(r["status"] == "ok" for r in records):  # priced under the label, never as plain bfloat16
        assert "matmul 64x64x64 bfloat16 (emulated)" in said


@pytest.mark.slow
def test_a_native_dtype_carries_no_label(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = cli("run", "--backend", "torch-cpu", "--shape", "64x64x64", "--dtype", "float32", "--out", out, *FAST)
    assert proc.returncode == 0, proc.stderr
    (r,) = map(json.loads, out.read_text().splitlines())
    assert "dtype_support" not in r["case"] and "emulated" not in proc.stdout
