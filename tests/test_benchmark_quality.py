"""tools.benchmark quality: its cost accounting, its resumable results file and its table (no sampling)."""

import json

import pytest

from glide_jax.sampling.loading import resolve
from tools import benchmark_quality
from tools.benchmark_quality import Setting, evaluations_per_image, grid, read_results, run, table


@pytest.fixture(scope="module")
def embedded_base():
    return resolve("embedded-base").config.diffusion


def test_model_evaluations_count_the_steps_run_and_the_guided_ones(embedded_base):
    # "6" respaces 1000 steps to timesteps 0, 200, 400, 599, 799, 999.
    assert evaluations_per_image(embedded_base, Setting("ddpm", 6, None), 1.0) == 12
    # start 0.85 runs indices 0..4; guidance on 0.5-1 covers timesteps 499..999, i.e. 599 and 799
    assert evaluations_per_image(embedded_base, Setting("ddpm", 6, None), 0.85) == 10
    assert evaluations_per_image(embedded_base, Setting("ddpm", 6, (0.5, 1.0)), 0.85) == 5 + 2
    assert evaluations_per_image(embedded_base, Setting("ddpm", 50, None), 0.85) == 2 * 42
    assert evaluations_per_image(embedded_base, Setting("ddim", 20, (0.5, 1.0)), 1.0) == 20 + 10


def test_a_self_guided_student_costs_one_evaluation_per_step_on_its_trailing_grid(embedded_base):
    # trailing4 is timesteps 249, 499, 749, 999; start 0.85 begins at index 2 (t = 749)
    student = Setting("stochastic_fewstep", "trailing4", (0.5, 1.0), model="runs/student")
    assert evaluations_per_image(embedded_base, student, 1.0, self_guided=True) == 4
    assert evaluations_per_image(embedded_base, student, 0.85, self_guided=True) == 3
    assert evaluations_per_image(embedded_base, student, 1.0) == 4 + 3  # a two-pass guided model: 499-999 guided
    assert student.name == "runs/student: stochastic_fewstep trailing4, guidance on 0.5-1"
    assert json.loads(student.key("accuracy", 1))[-1] == "runs/student"
    assert json.loads(Setting("ddpm", 20, None).key("accuracy")) == ["accuracy", "ddpm", 20, None, 0]
    from glide_jax.sampling.options import steps_value
    assert steps_value("8") == 8 and steps_value(" trailing8:875 ") == "trailing8:875" and steps_value(20) == 20


def test_a_stopped_run_resumes_without_measuring_or_rewriting_anything_twice(tmp_path, monkeypatch):
    measured = []

    def fake_accuracy(pipe, prompts, setting, seed):
        measured.append((setting, seed))
        return {"correct": 0.5 + 0.1 * seed, "n": len(prompts), "attributes": {}, "evaluations": 2 * setting.steps}

    monkeypatch.setattr(benchmark_quality, "measure_accuracy", fake_accuracy)
    monkeypatch.setattr("glide_jax.sampling.loading.load_pipeline", lambda *args: "pipeline")
    out = tmp_path / "quality.jsonl"
    settings = grid(["ddim", "dpm++2m"], [5, 10], (0.5, 1.0))
    assert [s.name for s in settings[:2]] == ["ddim 5", "ddim 10"] and settings[-1].interval == (0.5, 1.0)
    run(settings[:3], ["accuracy"], [0, 1], "heldout:4", out)
    first = out.read_text()
    assert len(measured) == 6 and len(first.splitlines()) == 6
    results = run(settings, ["accuracy"], [0, 1], "heldout:4", out)
    assert len(measured) == 16 and out.read_text().startswith(first) and len(results) == 16
    assert measured[6:8] == [(settings[3], 0), (settings[3], 1)]  # where the first run stopped
    rows = table(results, settings[:2], [0, 1]).splitlines()
    assert rows[2] == "| ddim 5 | 10 | 50.0% | 60.0% | – | – |"
    assert len(rows) == 4
    # the full-size base is timed up to 10 steps; longer chains are scaled from seconds per evaluation
    timed = Setting("ddim", 10, None)
    results[timed.key("full_size_time")] = {"kind": "full_size_time", "seconds_per_image": 22.0, "evaluations": 20}
    rows = table(results, [timed, Setting("ddim", 50, None), Setting("ddim", 50, (0.5, 1.0))], [0]).splitlines()
    assert rows[2].endswith("| 22.0 |") and rows[3].endswith("| ≈110 |") and rows[4].endswith("| – |")


def test_a_damaged_results_file_is_named_not_overwritten(tmp_path):
    out = tmp_path / "quality.jsonl"
    out.write_text(json.dumps({"key": "k"}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"quality.jsonl:2 is not a JSON line"):
        read_results(out)
    assert out.read_text().endswith("{not json\n")
