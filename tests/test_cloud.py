"""Instance detection (against a stub metadata server on 127.0.0.1), owned hardware, power."""

import http.server
import os
import subprocess
import sys
import time

import pytest

from infercost.hardware.cost import owned_per_hour
from infercost.bench.power import PowerSampler
from infercost.hardware import cloud

from conftest import loopback_server


class Stub(http.server.BaseHTTPRequestHandler):
    answers: dict = {}
    requests: list = []

    def _answer(self):
        Stub.requests.append((self.command, self.path))
        key = (self.command, self.path.split("?")[0])
        body, header = self.answers.get(key, (None, None))
        if body is None or (header and self.headers.get(header[0]) != header[1]):
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_PUT = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    Stub.requests = []
    yield from loopback_server(Stub)


AWS = {("PUT", "/latest/api/token"): ("tok", ("X-aws-ec2-metadata-token-ttl-seconds", "60")),
       ("GET", "/latest/meta-data/instance-type"): ("c7i.2xlarge", ("X-aws-ec2-metadata-token", "tok"))}
GCP = {("GET", "/computeMetadata/v1/instance/machine-type"): ("projects/1/machineTypes/a2-highgpu-8g",
                                                              ("Metadata-Flavor", "Google"))}
TPU = {("GET", "/computeMetadata/v1/instance/attributes/accelerator-type"): ("v6e-8", ("Metadata-Flavor", "Google"))}
AZURE = {("GET", "/metadata/instance/compute/vmSize"): ("Standard_ND96isr_H100_v5", ("Metadata", "true"))}


@pytest.mark.parametrize("answers, expected", [(AWS, "aws:c7i.2xlarge"), (GCP, "gcp:a2-highgpu-8g"),
                                               (TPU, "gcp:tpu-v6e-8"), (AZURE, "azure:Standard_ND96isr_H100_v5"),
                                               ({}, None)])
def test_detect_reads_each_clouds_metadata(stub, answers, expected):
    Stub.answers = answers
    assert cloud.detect(base=stub[1]) == expected


def test_detection_gives_up_quickly_when_nothing_answers():
    start = time.monotonic()
    assert cloud.detect(base="http://127.0.0.1:9", timeout=0.2) is None  # the discard port: refused
    assert time.monotonic() - start < 3


def run_cli(args, env_extra):
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "infercost.cli", "run", "--backend", "torch-cpu",
                           "--shape", "1024x1024x1024", "--min-time", "0.3", "--warmup", "0.1", *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_a_run_prices_itself_from_metadata_only_when_asked(stub, tmp_path):
    Stub.answers = AWS
    off = run_cli(["--out", str(tmp_path / "a.jsonl")], {"INFERCOST_METADATA_URL": stub[1]})
    assert off.returncode == 0 and Stub.requests == []  # default: no metadata request at all
    on = run_cli(["--out", str(tmp_path / "b.jsonl"), "--detect-instance"], {"INFERCOST_METADATA_URL": stub[1]})
    assert on.returncode == 0, on.stderr
    # Priced at the detected instance (a loaded machine may make the one case too noisy to price).
    assert "aws:c7i.2xlarge" in on.stdout and ("$/PFLOP" in on.stdout or "no valid measurement" in on.stdout)
    assert Stub.requests  # it asked the stub, and nothing else


def test_owned_hardware_price_by_hand():
    # $30,000 over 4 years is $0.856/h; 700 W at $0.10/kWh is $0.07/h.
    # 4 years are 35,040 hours (4 x 365 x 24), so $0.856164/h, and $0.926164/h in all.
    assert owned_per_hour(30000, 4, 700, 0.10) == pytest.approx(0.926164, rel=1e-6)
    assert owned_per_hour(10000, 1, 0, 0.30) == pytest.approx(1.141553, rel=1e-6)  # 10,000 / 8,760 h, no power
    # in a building of PUE 1.3 the 700 W draw 910 W from the grid: $0.091/h, $0.947164/h in all
    assert owned_per_hour(30000, 4, 700, 0.10, pue=1.3) == pytest.approx(0.947164, rel=1e-6)


def test_owned_needs_power_and_electricity_price(tmp_path):
    proc = run_cli(["--out", str(tmp_path / "c.jsonl"), "--owned", "30000"], {})
    assert proc.returncode == 2 and "--power-w" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(["--out", str(tmp_path / "c.jsonl"), "--owned", "30000", "--power-w", "700", "--kwh-price", "0.1",
                    "--pue", "0.9"], {})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "PUE >= 1" in proc.stderr


def test_power_sampler_averages_readings_while_the_block_runs():
    # Three readings, then the reader fails (as NVML can): the mean is of exactly those three.
    readings = iter([300.0, 500.0, 700.0])
    with PowerSampler(lambda: next(readings), period_s=0.001) as s:
        time.sleep(0.05)
    assert s.samples == [300.0, 500.0, 700.0] and s.mean_watts() == 500.0
    with PowerSampler(lambda: 1 / 0) as broken:  # a reader that fails stops sampling, never the run
        time.sleep(0.01)
    assert broken.mean_watts() is None


POD = {("GET", "/computeMetadata/v1/instance/attributes/agent-worker-number"): ("2", ("Metadata-Flavor", "Google")),
       ("GET", "/computeMetadata/v1/instance/attributes/worker-network-endpoints"):
           ("unknown:unknown:10.130.0.5,unknown:unknown:10.130.0.6,unknown:unknown:10.130.0.7,unknown:unknown:10.130.0.8",
            ("Metadata-Flavor", "Google"))}


def test_a_tpu_slices_hosts_come_from_its_vms_metadata_when_asked(stub):
    from infercost.bench.hosts import Hosts, from_tpu_pod
    Stub.answers = POD
    pod = cloud.tpu_pod(base=stub[1])
    assert pod == (2, ["10.130.0.5", "10.130.0.6", "10.130.0.7", "10.130.0.8"])
    assert from_tpu_pod(pod, None) == Hosts(4, 2, "10.130.0.5", 8476, "tpu-metadata")
    Stub.answers = {}
    assert cloud.tpu_pod(base=stub[1]) is None  # not a TPU VM
