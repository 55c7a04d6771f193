"""The CPU read ceiling's reader (bench/read_sweep.c, built by bench/native.py): it reads every byte,
and where it cannot be built the sweep reads with numpy and says so."""

from __future__ import annotations

import numpy as np
import pytest


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
            word = np.zeros(8, np.uint8)
            word[at % 8] = buf[at]
            # a byte of a whole word lands at its place in the word; a tail byte is OR-ed in as itself
            want = int(word.view(np.uint64)[0]) if at < nbytes - nbytes % 8 else int(buf[at])
            assert read(buf.ctypes.data, nbytes) == want, (nbytes, at)


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
    finally:
        sweep.native_reader.cache_clear()


def test_a_source_that_does_not_compile_says_why_and_leaves_nothing_in_the_cache(monkeypatch, tmp_path):
    from infercost.bench.native import build_library
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    bad = tmp_path / "bad.c"
    bad.write_text("this is not C\n")
    with pytest.raises(RuntimeError, match="failed"):
        build_library(bad, ["-shared", "-fPIC"])
    assert not list(tmp_path.rglob("*.so"))
