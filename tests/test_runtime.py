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


def test_compilation_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GLIDE_JAX_CACHE", str(tmp_path / "hub"))
    assert runtime.compilation_cache_dir({}) == tmp_path / "hub" / "xla"
    assert runtime.compilation_cache_dir({runtime.COMPILATION_CACHE_ENV: str(tmp_path / "x")}) == tmp_path / "x"
    for off in ("0", "off", "False", " no "):
        assert runtime.compilation_cache_dir({runtime.COMPILATION_CACHE_ENV: off}) is None


# A process that turns the cache on and compiles one small program (stored: the cache keeps every program);
# it prints the folder in use, the cache's size limit and how many compilations were served from the cache.
_CACHE_RUN = """
import jax, jax.numpy as jnp
from jax import monitoring
from glide_jax import runtime
hits = []
monitoring.register_event_listener(lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
folder = runtime.enable_compilation_cache()
assert float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((3, 3))).sum()) > 0
print(folder, jax.config.jax_compilation_cache_max_size, len(hits))
"""


def _cache_env(env):
    cleared = (runtime.COMPILATION_CACHE_ENV, "JAX_COMPILATION_CACHE_DIR")
    return {**{k: v for k, v in os.environ.items() if k not in cleared}, **env}


def _finished(process):
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    assert "compilation cache" not in stderr, stderr[-2000:]  # JAX warns of an entry it could not read or write
    folder, limit, hits = stdout.split()
    return folder, int(limit), int(hits)


def _cache_runs(env, copies=1):
    """Start ``copies`` processes at once on ``env``; their (folder, size limit, cache hits)."""
    processes = [subprocess.Popen([sys.executable, "-c", _CACHE_RUN], env=_cache_env(env), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(copies)]
    return [_finished(p) for p in processes]


def test_processes_share_the_cache_and_load_what_the_first_compiled(tmp_path):
    cache = tmp_path / "xla"
    env = {runtime.COMPILATION_CACHE_ENV: str(cache)}
    limit = runtime.CACHE_MAX_BYTES
    # two processes on an empty folder at the same time: both compile and write, neither fails or warns
    assert [run[:2] for run in _cache_runs(env, copies=2)] == [(str(cache), limit)] * 2
    entries = [p for p in cache.iterdir() if p.name.endswith("-cache")]
    assert entries, sorted(p.name for p in cache.iterdir())
    # every program of those runs (the jitted function and the eager ops around it) is loaded, none compiled
    assert _cache_runs(env) == [(str(cache), limit, len(entries))]
    # off: nothing stored, nothing loaded
    assert _cache_runs({runtime.COMPILATION_CACHE_ENV: "0"}) == [("None", -1, 0)]
    # a folder configured through JAX itself is kept, with JAX's own settings
    mine = tmp_path / "mine"
    assert _cache_runs({"JAX_COMPILATION_CACHE_DIR": str(mine)}) == [(str(mine), -1, 0)]
