"""The accelerator catalog: device names as backends report them map to the right entry."""

import pytest

from infercost.hardware import catalog

REPORTED = {  # torch's get_device_name, JAX's device_kind, ROCm and Neuron names
    "NVIDIA H100 80GB HBM3": "NVIDIA H100 SXM5 80GB",
    "NVIDIA H100 PCIe": "NVIDIA H100 PCIe 80GB",
    "NVIDIA H200": "NVIDIA H200 SXM 141GB",
    "NVIDIA A100-SXM4-80GB": "NVIDIA A100 80GB SXM4",
    "NVIDIA A100-SXM4-40GB": "NVIDIA A100 40GB SXM4",
    "NVIDIA B200": "NVIDIA B200",
    "NVIDIA L4": "NVIDIA L4",
    "NVIDIA L40S": "NVIDIA L40S",
    "AMD Instinct MI300X": "AMD Instinct MI300X",
    "TPU v4": "Google TPU v4",
    "TPU v5 lite": "Google TPU v5e",
    "TPU v5e": "Google TPU v5e",
    "TPU v5": "Google TPU v5p",
    "TPU v5p": "Google TPU v5p",
    "TPU v6 lite": "Google TPU v6e",
    "TPU7x": "Google TPU7x (Ironwood)",
    "GAUDI2": "Intel Gaudi 2",
}


@pytest.mark.parametrize("reported, entry", REPORTED.items())
def test_reported_device_names_match_their_entry(reported, entry):
    assert catalog.lookup(reported).name == entry


@pytest.mark.parametrize("unknown", ["AMD EPYC", "Intel(R) Xeon(R) Processor", "NVIDIA H200 NVL",
                                     "NVIDIA A100 80GB PCIe", "NVIDIA GeForce RTX 4090", ""])
def test_unknown_devices_are_not_guessed(unknown):
    assert catalog.lookup(unknown) is None


def test_every_row_has_a_source_a_date_and_dense_decimal_peaks():
    rows = catalog.all_entries()
    assert len(rows) >= 23
    for acc in rows:
        assert acc.source and acc.as_of and acc.memory_gb and acc.bandwidth_tbs
        assert acc.peak("bfloat16") and 1e14 < acc.peak("bfloat16") < 3e15  # dense, decimal FLOP/s
    h100 = catalog.lookup("NVIDIA H100 80GB HBM3")
    assert h100.peak("bfloat16") == 989.4e12 and h100.peak("float32", tf32=True) == 494.7e12
    assert h100.bandwidth == 3.35e12
