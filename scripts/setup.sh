#!/usr/bin/env bash
# One set-up for every machine: a virtual environment in .venv with infercost installed.
#   bash scripts/setup.sh        # to run infercost
#   bash scripts/setup.sh test   # also the test dependencies, and .venv-fleet (below)
#   bash scripts/setup.sh fleet  # only .venv-fleet: infercost with SkyPilot, for `infercost fleet`
# torch and jax are chosen for the hardware found: CUDA builds where an NVIDIA GPU answers,
# JAX's TPU build on a Cloud TPU VM, CPU builds elsewhere. Set INFERCOST_TORCH to a pip
# requirement (e.g. "torch==2.11.0") to choose torch yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
[ "${1:-}" = fleet ] && venv=.venv-fleet
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip() { "$venv/bin/python" -m pip "$@"; }
pip install -q --upgrade pip

extras=()
[ "${1:-}" = test ] && extras+=(test)
[ "${1:-}" = fleet ] && extras+=(fleet)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    torch_req=${INFERCOST_TORCH:-"torch>=2.4"}
    extras+=(cuda)
elif ls /dev/accel* /dev/vfio/[0-9]* >/dev/null 2>&1; then
    torch_req=${INFERCOST_TORCH:-"torch==2.13.0"}
    extras+=(tpu)
else
    # A plain "torch" would pull a multi-GB CUDA build onto a machine with no GPU.
    torch_req=${INFERCOST_TORCH:-"torch==2.13.0"}
fi
"$venv/bin/python" -c "import torch" 2>/dev/null || pip install -q "$torch_req"
spec="."
[ ${#extras[@]} -gt 0 ] && spec=".[$(IFS=,; echo "${extras[*]}")]"
pip install -q -e "$spec"
echo "infercost is set up in $venv ($("$venv/bin/infercost" --version))"
# SkyPilot in an environment of its own: it pins click 8.1, which transformers 5 (a test
# dependency) refuses. The fleet tests run their SkyPilot parts there.
[ "${1:-}" = test ] && bash "$0" fleet
exit 0
