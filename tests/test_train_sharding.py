"""Sharded training equals single-device training, and the state really is split across devices.

Runs in a subprocess with 8 fake CPU devices (``--xla_force_host_platform_device_count``
must be set before JAX starts, which pytest cannot guarantee in-process). The
same two train steps run on one device and on a 4 (fsdp) x 2 (tensor) mesh
with the batch in 2 microbatches (gradient accumulation under a mesh, where
the microbatch layout is pinned); the slow variant adds an 8 (fsdp) x 1 mesh.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, sys
    from pathlib import Path
    import jax, jax.numpy as jnp, numpy as np
    from glide_jax.config import DiffusionConfig, ModelConfig, TextConfig, UNetConfig
    from glide_jax.data.input_pipeline import global_batch
    from glide_jax.train import sharding as sh, state as S
    from glide_jax.train.experiment import ExperimentConfig, MeshConfig, TrainConfig
    from glide_jax.train.loop import build_state
    from glide_jax.family import family_of

    out_dir, runs = Path(sys.argv[1]), json.loads(sys.argv[2])
    unet = UNetConfig(image_size=16, num_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(8,),
                      num_head_channels=16, text=TextConfig(text_ctx=8, width=32, layers=1, heads=2, n_vocab=32))
    base = ExperimentConfig(task="base", model=ModelConfig(unet, DiffusionConfig()),
                            train=TrainConfig(batch_size=16, lr=1e-3, warmup_steps=0, ema_rate=0.9))
    rng = np.random.default_rng(0)
    batch = {"image": (rng.integers(0, 256, (16, 16, 16, 3)) / 127.5 - 1).astype(np.float32),
             "tokens": rng.integers(1, 32, (16, 8)).astype(np.int32),
             "mask": np.arange(8)[None] < rng.integers(1, 9, (16, 1))}
    meta = {}
    for name, (data, fsdp, tensor), micro in runs:
        cfg = dataclasses.replace(base, mesh=MeshConfig(data=data, fsdp=fsdp, tensor=tensor),
                                  train=dataclasses.replace(base.train, microbatches=micro))
        mesh = sh.make_mesh(cfg.mesh, jax.devices()[: data * fsdp * tensor])
        tx = S.make_optimizer(cfg.train)
        init, shardings, _ = build_state(cfg, mesh, tx)
        state = init()
        step = sh.jit_step(family_of(cfg.model).make_train_step(cfg.model, cfg.train, tx, mesh=mesh), shardings, mesh)
        losses = []
        for _ in range(2):
            placed = global_batch(batch, sh.batch_sharding(mesh))
            state, metrics = step(state, placed)
            losses.append(float(metrics["loss"]))
        host = jax.device_get(state)
        np.savez(out_dir / f"{name}.npz", *[np.asarray(x) for x in jax.tree.leaves(host)])
        kernel = state.params["unet"]["input_blocks_1_0"]["in_layers_2"]["kernel"]
        mu = state.opt_state[1][0].mu["unet"]["input_blocks_1_0"]["in_layers_2"]["kernel"]
        leaves = jax.tree.leaves(state.params)
        dev0 = jax.devices()[0]
        meta[name] = {
            "losses": losses,
            "kernel_shape": list(kernel.shape),
            "kernel_spec": [list(a) if isinstance(a, tuple) else a for a in kernel.sharding.spec],
            "kernel_shard": list(kernel.addressable_shards[0].data.shape),
            "kernel_devices": len({s.device for s in kernel.addressable_shards}),
            "mu_shard": list(mu.addressable_shards[0].data.shape),
            "batch_spec": [list(a) if isinstance(a, tuple) else a for a in placed["image"].sharding.spec],
            "batch_shard": list(placed["image"].addressable_shards[0].data.shape),
            "device0_fraction": sum(s.data.size for x in leaves for s in x.addressable_shards if s.device == dev0)
            / sum(x.size for x in leaves),
        }
    print("RESULT" + json.dumps(meta))
    """
)


RUNS = {
    # name: ((data, fsdp, tensor), microbatches)
    "single": ((1, 1, 1), 1),
    "fsdp4_tensor2_accum2": ((1, 4, 2), 2),
    "fsdp8": ((1, 8, 1), 1),
}


def _start(out_dir, names, devices, fast_compile):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = [f"--xla_force_host_platform_device_count={devices}"]
    if fast_compile:  # fine for the one-device reference; sharded CPU programs would then run ~15x slower
        flags.append("--xla_backend_optimization_level=0")
    env["XLA_FLAGS"] = " ".join(flags)
    runs = json.dumps([[n, *RUNS[n]] for n in names])
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out_dir), runs], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-4000:]
    return json.loads([l for l in out.splitlines() if l.startswith("RESULT")][-1][len("RESULT"):])


def _run(tmp_path, names):
    """The single-device reference and the meshes run side by side in two processes."""
    ref = _start(tmp_path, ["single"], 1, fast_compile=True)
    meshes = _start(tmp_path, names, 8, fast_compile=False)
    results = {**_finish(ref), **_finish(meshes)}
    results["arrays"] = {n: np.load(tmp_path / f"{n}.npz") for n in ["single", *names]}
    return results


def _check_matches_single_device(results, name):
    r, ref = results[name], results["single"]
    assert r["losses"] == pytest.approx(ref["losses"], rel=1e-5)
    a, b = results["arrays"][name], results["arrays"]["single"]
    assert len(a.files) == len(b.files) > 0
    # Two Adam steps at lr 1e-3 (updates ~1e-3): differences are float32 summation-order noise.
    diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a.files)
    assert diff < 2e-5, diff


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("sharding"), ["fsdp4_tensor2_accum2"])


@pytest.mark.slow  # two compiled training runs on 8 fake devices (~100 s)
def test_4x2_mesh_with_gradient_accumulation_matches_single_device(results):
    _check_matches_single_device(results, "fsdp4_tensor2_accum2")


@pytest.mark.slow  # shares the 8-device runs above
def test_parameters_and_optimizer_state_are_split(results):
    a = results["fsdp4_tensor2_accum2"]
    # conv kernel [3, 3, in=32, out=32]: input channels over fsdp (4), output channels over tensor (2).
    assert a["kernel_shape"] == [3, 3, 32, 32] and a["kernel_spec"] == [None, None, "fsdp", "tensor"]
    assert a["kernel_shard"] == [3, 3, 8, 16] and a["mu_shard"] == [3, 3, 8, 16] and a["kernel_devices"] == 8
    # The batch is split over fsdp only: the size-1 data axis is left out of its layout.
    assert a["batch_spec"] == ["fsdp"] and a["batch_shard"] == [4, 16, 16, 3]
    assert results["single"]["batch_spec"] == [None] and results["single"]["batch_shard"] == [16, 16, 16, 3]
    # Each device holds a small part of the parameters (norms, biases and 3-channel convs stay whole).
    assert a["device0_fraction"] < 0.25
    assert results["single"]["device0_fraction"] == 1.0


@pytest.mark.slow
def test_8x1_fsdp_mesh_matches_single_device(tmp_path):
    results = _run(tmp_path, ["fsdp8"])
    _check_matches_single_device(results, "fsdp8")
    b = results["fsdp8"]
    assert b["kernel_spec"] == [None, None, "fsdp"] and b["kernel_shard"] == [3, 3, 4, 32] and b["mu_shard"] == [3, 3, 4, 32]
    assert b["device0_fraction"] < 0.25
