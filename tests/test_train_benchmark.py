"""``python -m tools.benchmark train`` runs and reports consistent numbers (micro configs)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_benchmark_measures_and_estimates():
    cmd = [sys.executable, "-m", "tools.benchmark", "train", "--measure", "base_micro:4", "--steps", "2",
           "--pod", "base_micro:64", "--chips", "16", "--mesh-devices", "8"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    m = out["measured"][0]
    assert m["config"] == "base_micro" and m["params"] == 867_110 and m["batch_size"] == 4
    assert m["gflop_per_step"] > 0 and m["images_per_s"] > 0
    assert m["achieved_gflops"] == pytest.approx(m["gflop_per_step"] / m["step_s"], rel=0.02)
    est = out["pod_estimates"][0]
    assert est["mesh"] == {"data": 1, "fsdp": 16, "tensor": 1} and est["images_per_fsdp_shard"] == 4
    # Per chip: 4 images of a 64-image step; the single-device measurement did 4 images too.
    assert est["tflop_per_chip_per_step"] * 1e3 == pytest.approx(m["gflop_per_step"], rel=0.3)
    assert est["state_gib_per_chip"] < est["state_gib_per_device_on_compile_mesh"]
    assert est["step_s_estimate"] >= est["compute_s_per_step"] > 0
