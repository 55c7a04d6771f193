"""Which cloud instance is this? Asked of the instance-metadata service, only when the user
opts in (--detect-instance or INFERCOST_DETECT_INSTANCE=1), with a short timeout, never
blocking a run. INFERCOST_METADATA_URL points it elsewhere (tests use a server on 127.0.0.1).
"""

from __future__ import annotations

import os
import threading
import urllib.request

DEFAULT_URL = "http://169.254.169.254"
TIMEOUT_S = 0.5
# Metadata services are link-local: never route them through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, headers: dict, method: str = "GET", timeout: float = TIMEOUT_S) -> str | None:
    try:
        req = urllib.request.Request(url, headers=headers, method=method)
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.read().decode().strip() or None
    except (OSError, ValueError):
        return None


def detect(base: str | None = None, timeout: float = TIMEOUT_S) -> str | None:
    """"provider:instance_type" from AWS, GCP or Azure metadata, or None."""
    base = (base or os.environ.get("INFERCOST_METADATA_URL") or DEFAULT_URL).rstrip("/")
    token = _get(f"{base}/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, "PUT", timeout)
    if token:  # AWS IMDSv2
        itype = _get(f"{base}/latest/meta-data/instance-type", {"X-aws-ec2-metadata-token": token}, timeout=timeout)
        if itype:
            return f"aws:{itype}"
    google = {"Metadata-Flavor": "Google"}
    tpu = _get(f"{base}/computeMetadata/v1/instance/attributes/accelerator-type", google, timeout=timeout)
    if tpu:  # a Cloud TPU VM: "v6e-8" names the slice
        return f"gcp:tpu-{tpu}"
    machine = _get(f"{base}/computeMetadata/v1/instance/machine-type", google, timeout=timeout)
    if machine:
        return f"gcp:{machine.rsplit('/', 1)[-1]}"
    size = _get(f"{base}/metadata/instance/compute/vmSize?api-version=2021-02-01&format=text",
                {"Metadata": "true"}, timeout=timeout)
    if size:
        return f"azure:{size}"
    return None


def tpu_pod(base: str | None = None, timeout: float = 2.0) -> tuple[int, list[str]] | None:
    """On a Cloud TPU VM of a multi-host slice: (this host's worker number, every host's address in
    worker order), from the VM's metadata (agent-worker-number; worker-network-endpoints, a comma
    list of name:id:address), or None where the metadata does not say. Asked only when the user
    opts in (run --tpu-pod)."""
    base = (base or os.environ.get("INFERCOST_METADATA_URL") or "http://metadata.google.internal").rstrip("/")
    google = {"Metadata-Flavor": "Google"}
    attrs = f"{base}/computeMetadata/v1/instance/attributes"
    worker = _get(f"{attrs}/agent-worker-number", google, timeout=timeout)
    endpoints = _get(f"{attrs}/worker-network-endpoints", google, timeout=timeout)
    if worker is None or endpoints is None or not worker.isdigit():
        return None
    addresses = [e.rsplit(":", 1)[-1].strip() for e in endpoints.split(",") if e.strip()]
    return (int(worker), addresses) if addresses and all(addresses) else None


def enabled(flag: bool) -> bool:
    return flag or os.environ.get("INFERCOST_DETECT_INSTANCE", "") in ("1", "true", "yes")


class Detection:
    """Runs detect() in the background while the run measures; result() waits at most briefly."""

    def __init__(self):
        self.instance = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.instance = detect()

    def result(self, wait_s: float = 3.0) -> str | None:
        self._thread.join(wait_s)
        return self.instance
