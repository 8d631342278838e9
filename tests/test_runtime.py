"""The XLA CPU defaults: merged into XLA_FLAGS without overriding the user, and in effect."""

import os
import subprocess
import sys

from glide_jax import runtime


def test_merge_adds_defaults_and_keeps_user_flags():
    merged = runtime.merged_xla_flags("--xla_force_host_platform_device_count=8")
    assert merged.split() == ["--xla_force_host_platform_device_count=8",
                              "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-dot"]
    mine = "--xla_cpu_experimental_ynn_fusion_type=+eltwise"
    assert runtime.merged_xla_flags(mine) == mine
    assert runtime.merged_xla_flags(None) == "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-dot"


def test_apply_respects_opt_out_and_is_idempotent(monkeypatch):
    monkeypatch.setattr(runtime, "jaxlib_knows_flags", lambda: True)
    env = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}
    assert runtime.apply_cpu_defaults(env)
    assert "ynn_fusion_type" in env["XLA_FLAGS"] and "optimization_level=0" in env["XLA_FLAGS"]
    assert not runtime.apply_cpu_defaults(env)  # already there
    off = {runtime.DISABLE_ENV: "0"}
    assert not runtime.apply_cpu_defaults(off) and "XLA_FLAGS" not in off
    monkeypatch.setattr(runtime, "jaxlib_knows_flags", lambda: False)
    unknown = {}
    assert not runtime.apply_cpu_defaults(unknown) and "XLA_FLAGS" not in unknown


def test_import_sets_flags_before_the_backend_starts():
    """In a fresh process, importing glide_jax puts the flags where XLA reads them, and XLA accepts them."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", runtime.DISABLE_ENV)}
    code = ("import os, glide_jax, jax.numpy as jnp; "
            "assert float(jnp.ones(3).sum()) == 3.0; print(os.environ.get('XLA_FLAGS', ''))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert ("ynn_fusion_type" in out.stdout) == runtime.jaxlib_knows_flags()
