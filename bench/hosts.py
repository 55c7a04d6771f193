"""Which hosts a run spans, and this host's place among them.

A multi-host run is the same `infercost run` on every host. Each learns its rank, the host
count and where host 0 listens from explicit flags (any launcher: Slurm, Kubernetes, by hand),
from the variables SkyPilot sets on every node of a multi-node task or TPU pod slice, or (asked
for with --tpu-pod) from a Cloud TPU VM's own metadata. Host 0
listens on three ports from the coordinator's: the run's control link (PORT), JAX's coordination
service (PORT + 1 + generation) and torch.distributed's store (PORT + 1 + generation).
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, replace

from infercost.errors import InputError

DEFAULT_PORT = 8476  # the control link's port when the coordinator comes from SkyPilot
JOIN_TIMEOUT_S = 120.0  # how long host 0 waits for every host, and a host for host 0


@dataclass(frozen=True)
class Hosts:
    count: int
    rank: int
    address: str   # host 0's address, as every host reaches it
    port: int      # host 0's control port
    source: str    # "flags", "skypilot" or "tpu-metadata"

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def coordinator(self) -> str:
        return f"{self.address}:{self.port}"

    def service_port(self, generation: int) -> int:
        """Where the frameworks' own rendezvous listens for the workers of one generation (a fresh
        port each time the workers restart: the last one's may still be held by the kernel)."""
        return self.port + 1 + generation % 500

    def as_dict(self) -> dict:
        return asdict(self)


def _count(text: str, what: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise InputError(f"{what} must be a whole number, not {text!r}") from None
    return value


def parse_coordinator(text: str) -> tuple[str, int]:
    host, sep, port = str(text).strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 - 501:
        raise InputError(f"--coordinator {text!r}: give HOST:PORT with a port from 1 to {65535 - 501}")
    return host, int(port)


def from_tpu_pod(pod: tuple[int, list[str]] | None, coordinator: str | None) -> Hosts:
    """This host's place from a Cloud TPU slice's metadata (hardware/cloud.py tpu_pod): host 0
    is the slice's worker 0."""
    if pod is None:
        raise InputError("--tpu-pod: this machine's metadata names no TPU slice workers (not a Cloud TPU VM?)")
    rank, addresses = pod
    if len(addresses) < 2:
        raise InputError("--tpu-pod: the slice has one host; run without --tpu-pod")
    if not 0 <= rank < len(addresses):
        raise InputError(f"--tpu-pod: worker {rank} is out of range for {len(addresses)} hosts")
    address, port = parse_coordinator(coordinator) if coordinator else (addresses[0], DEFAULT_PORT)
    return Hosts(len(addresses), rank, address, port, "tpu-metadata")


def find(coordinator: str | None, num_hosts: int | None, host_rank: int | None, environ: dict) -> Hosts | None:
    """This host's place in a multi-host run, or None for a run on this host alone. Flags win
    over SkyPilot's variables, and where both give a figure they must agree."""
    flags = (coordinator, num_hosts, host_rank)
    sky_nodes = environ.get("SKYPILOT_NUM_NODES")
    sky = sky_nodes is not None and _count(sky_nodes, "SKYPILOT_NUM_NODES") > 1
    if all(f is None for f in flags) and not sky:
        return None
    if any(f is not None for f in flags) and any(f is None for f in flags) and not sky:
        raise InputError("a multi-host run needs --coordinator HOST:PORT, --num-hosts N and --host-rank I together "
                         "(or SkyPilot's SKYPILOT_NODE_RANK, SKYPILOT_NODE_IPS and SKYPILOT_NUM_NODES)")
    source = "flags"
    if sky:
        source = "skypilot"
        nodes = _count(sky_nodes, "SKYPILOT_NUM_NODES")
        if "SKYPILOT_NODE_RANK" not in environ or not environ.get("SKYPILOT_NODE_IPS", "").strip():
            raise InputError("SKYPILOT_NUM_NODES is set but SKYPILOT_NODE_RANK or SKYPILOT_NODE_IPS is missing")
        rank = _count(environ["SKYPILOT_NODE_RANK"], "SKYPILOT_NODE_RANK")
        ips = environ["SKYPILOT_NODE_IPS"].split()
        if len(ips) != nodes:
            raise InputError(f"SKYPILOT_NODE_IPS lists {len(ips)} hosts but SKYPILOT_NUM_NODES is {nodes}")
        if num_hosts is not None and num_hosts != nodes:
            raise InputError(f"--num-hosts {num_hosts} disagrees with SKYPILOT_NUM_NODES={nodes}")
        if host_rank is not None and host_rank != rank:
            raise InputError(f"--host-rank {host_rank} disagrees with SKYPILOT_NODE_RANK={rank}")
        address, port = parse_coordinator(coordinator) if coordinator else (ips[0], DEFAULT_PORT)
        num_hosts, host_rank = nodes, rank
    else:
        address, port = parse_coordinator(coordinator)
    if num_hosts < 2:
        raise InputError(f"--num-hosts {num_hosts}: a multi-host run has at least 2 hosts")
    if not 0 <= host_rank < num_hosts:
        raise InputError(f"host rank {host_rank} is out of range for {num_hosts} hosts (0 to {num_hosts - 1})")
    return Hosts(num_hosts, host_rank, address, port, source)


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def default_layout(hosts: Hosts, local_devices: int, models: list[str]) -> dict:
    """A run over hosts without --mesh: a host's devices in tensor parallelism (its fast links),
    data parallel across the hosts, or for a mixture of experts its experts across them."""
    from infercost.kernels.models import resolve_config
    try:
        moe = bool(models) and all(resolve_config(m).experts_model for m in models)
    except ValueError as e:
        raise InputError(str(e)) from None
    across = {"dp": 1, "ep": hosts.count} if moe else {"dp": hosts.count}
    return {"tp": max(1, local_devices), **across}


def spanning(cases: list, mesh: dict, hosts: Hosts, local_devices: dict[str, int]) -> tuple[list, list[str]]:
    """The planned cases (bench/case.py Case) a run over hosts measures, and notices: transformer
    cases split over every host's devices, and collectives over every device with, beside each,
    the same collective over one host's devices (the two bandwidths apart). local_devices: each
    backend's devices on one host (1 on CPUs, where a run forces as many as a host needs)."""
    from .layout import Layout
    devices = Layout.of(mesh).devices
    per_host = devices // hosts.count
    for backend, local in local_devices.items():
        if devices % hosts.count or (local > 1 and per_host != local):
            raise InputError(f"the layout {Layout.of(mesh)} spans {devices} devices, not a whole number of "
                             f"{hosts.count} hosts' devices" + (f" ({local} a host on {backend})" if local > 1 else ""))
    spans = [c for c in cases if c.workload in ("prefill", "decode", "collective") and c.devices == devices]
    notices = []
    if len(spans) < len(cases):
        notices.append("a multi-host run measures transformer cases and collectives over every host's devices; "
                       f"{len(cases) - len(spans)} other cases left out")
    if any(c.workload == "collective" for c in spans) and per_host < 2:
        notices.append("one device a host: collectives are measured across the hosts only")
    # a case over N hosts is another configuration than the same layout on one host: its key says so
    spans = [replace(c, params={**c.params, "hosts": hosts.count}) for c in spans]
    kept = [x for c in spans for x in ([c] if c.workload != "collective" or per_host < 2 else
                                       [c, replace(c, params={**c.params, "devices": per_host, "within_host": True},
                                                   devices=per_host)])]
    if not kept:
        raise InputError("a multi-host run measures transformer cases split over every host and collectives "
                         "(give --model, or a suite with them)")
    return kept, notices


def hosts_section(hosts: Hosts):
    """A record's `hosts` section for a case dict: the count, devices a host, the axes that cross
    a host boundary and whether a collective ran across the hosts or within one."""
    from .layout import Layout, across_hosts

    def section(case: dict) -> dict:
        mesh, within = case["params"].get("mesh"), case["params"].get("within_host")
        devices = Layout.of(mesh).devices if mesh else case.get("devices") or 1
        if within:  # a collective over one host's devices (each host ran its own at once)
            return {"count": hosts.count, "devices_per_host": devices, "across_hosts": [], "source": hosts.source,
                    "scope": "within one host"}
        across = across_hosts(Layout.of(mesh), hosts.count) if mesh else ["devices"]  # a collective spans them all
        return {"count": hosts.count, "devices_per_host": devices // hosts.count, "across_hosts": across,
                "source": hosts.source, "scope": "across hosts"}
    return section
