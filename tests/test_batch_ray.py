"""ids-batch on Ray (a local 2-CPU instance) against the in-process executor, fault tolerance (a killed worker's edit
resumes from its checkpoint, a killed reconstruction continues from its own), rows that fail alone, and the
statistics of the comparison.

The sweeps (marked ``ray``: ~3 min on 2 cores, more than the default suite can take) run in ``.ci/run`` with
``pytest -m ray``; the refusals and statistics here, and tests/test_batch.py's in-process batch, run by default.

Offline and on the CPU: the generated toy scene (32 px), the tiny prior, random-weight CLIP (ViT-B-32: 1 s to build
instead of ViT-L-14's 7 s) and LPIPS. Every task runs with one torch thread (--threads 1): with more, the CPU hash
grid's backward sums in a nondeterministic order and two identical runs differ in the last bits; with one, an edit is
bit-equal wherever it runs, so the two executors must give the same numbers (compared with a relative tolerance of
1e-6, far below any difference between methods, in case a platform's kernels round differently across processes).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from refusals import assert_refused, in_process, snapshot

from ids_nerf.presets import PRESETS_DIR

BLUE, GREEN = PRESETS_DIR / "toy" / "sphere-blue.yaml", PRESETS_DIR / "toy" / "sphere-green.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_prior_dir) -> dict:
    """The toy scene under a data root, two good presets (configs/toy) and two bad ones: a preset file missing its
    target prompt, and one whose scene folder exists but holds no data (its reconstruction task fails)."""
    from ids_nerf.toy.datasets import write_blender
    from ids_nerf.toy.scene_spec import ObjectSpec, SceneSpec

    root = tmp_path_factory.mktemp("batch-ray")
    scene = SceneSpec(objects=[ObjectSpec(shape="sphere", color="red", center=(0.0, 0.0, 0.5), size=0.5)])
    write_blender(scene, root / "data" / "toy" / "sphere", n_train=4, n_val=1, n_test=2, size=32, seed=0)
    (root / "data" / "toy" / "empty").mkdir()
    bad = root / "presets" / "no-target.yaml"
    bad.parent.mkdir()
    bad.write_text("scene: toy/sphere\nsrc_prompt: a red sphere\n")
    empty = root / "presets" / "empty-scene.yaml"
    empty.write_text("scene: toy/empty\nsrc_prompt: a red sphere\ntrg_prompt: a blue sphere\n")
    return {"root": root, "data": root / "data", "prior": tiny_prior_dir, "bad": bad, "empty": empty}


def _argv(world: dict, out: Path, *extra: str) -> list[str]:
    return [
        "ids-batch",
        "--presets",
        str(BLUE),
        str(world["bad"]),
        str(GREEN),
        str(world["empty"]),
        "--methods",
        "ids-edit",
        "dds-edit",
        "--seeds",
        "0",
        "--data-root",
        str(world["data"]),
        "--output-dir",
        str(out),
        "--recon-steps",
        "10",
        "--edit-steps",
        "2",
        "--prior.model",
        str(world["prior"]),
        "--device",
        "cpu",
        "--render-resolution",
        "64",
        "--cpu-scenes",
        "--eval.random-weights",
        "--eval.clip-model",
        "ViT-B-32",
        "--threads",
        "1",
        "--n-bootstrap",
        "200",
        *extra,
    ]


@pytest.fixture(scope="module")
def sweeps(world) -> dict:
    """The same sweep (2 good presets x 2 methods, plus 2 bad presets) in this process and on a local 2-CPU Ray
    instance (started and stopped by ids-batch), through the console script; the in-process sweep a second time.
    One edit's task fails when it runs: a file sits where its run folders should be created."""
    from ids_nerf.batch import entrypoint

    out: dict = {}
    for name, extra in (("in_process", ()), ("ray", ("--executor", "ray", "--ray.local-cpus", "2"))):
        folder = world["root"] / f"out-{name}"
        (folder / "sphere-green").mkdir(parents=True)
        (folder / "sphere-green" / "dds-edit").write_text("a file where the run folders of this edit should go")
        t0 = time.perf_counter()
        outcome = in_process(entrypoint, _argv(world, folder, *extra))
        out[name] = {
            "outcome": outcome,
            "dir": folder,
            "seconds": time.perf_counter() - t0,
            "json": json.loads((folder / "comparison.json").read_text()),
            "md": (folder / "comparison.md").read_text(),
        }
    again = in_process(entrypoint, _argv(world, world["root"] / "out-in_process"))
    out["again"] = {
        "outcome": again,
        "json": json.loads((world["root"] / "out-in_process" / "comparison.json").read_text()),
    }
    print("ids-batch wall seconds:", {k: round(v["seconds"], 1) for k, v in out.items() if "seconds" in v})
    return out


def _good(summary: dict) -> dict:
    return {r["key"]: r for r in summary["rows"] if r["status"] == "ok"}


@pytest.mark.ray
def test_ray_gives_the_in_process_comparison(sweeps):
    a, b = sweeps["in_process"]["json"], sweeps["ray"]["json"]
    assert a["executor"] == "in-process" and b["executor"] == "ray"
    good_a, good_b = _good(a), _good(b)
    keys = {"sphere-blue/ids-edit/seed0", "sphere-blue/dds-edit/seed0", "sphere-green/ids-edit/seed0"}
    assert set(good_a) == set(good_b) == keys
    for key in keys:
        for metric, value in good_a[key]["means"].items():
            other = good_b[key]["means"][metric]
            if value is None:
                assert other is None, (key, metric)
            else:
                assert math.isclose(value, other, rel_tol=1e-6, abs_tol=1e-9), (key, metric, value, other)
        assert good_b[key]["pid"] != os.getpid()  # it did run in a Ray worker
    assert {good_b[k]["means"]["depth_change"] is not None and good_b[k]["means"]["bg_psnr"] is not None for k in keys}
    for section in ("summary", "paired"):  # the intervals: the same runs, the same seeded resamples
        for method, metrics in a[section].items():
            for metric, ci in metrics.items():
                for end in ("mean", "low", "high"):
                    x, y = ci[end], b[section][method][metric][end]
                    assert (x is None and y is None) or math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)
    # one reconstruction of the shared scene, used by all four edits
    recons = {r["reconstruction"] for r in good_b.values()}
    assert len(recons) == 1 and len(list((sweeps["ray"]["dir"] / "sphere" / "ids-recon").iterdir())) == 1
    md = sweeps["ray"]["md"]
    assert "| ids-edit | 2 |" in md and "| dds-edit | 1 |" in md and "| ids-edit - dds-edit | 1 |" in md
    assert "NOT meaningful" in md
    assert "sphere-blue: CLIP text (↑)" in md and "sphere-green: depth change (↓)" in md
    for name in ("in_process", "ray"):  # each edit's console output is in its run folder
        for row in _good(sweeps[name]["json"]).values():
            log = Path(row["log"])
            assert log.parent == Path(row["run"]) and "Editing the scene of" in log.read_text()
    err = sweeps["ray"]["outcome"].err
    # one progress bar over the 5 tasks (1 reconstruction, 4 edits), the dashboard's address printed once
    assert "done 4, running 0, failed 1, left 0" in err and sweeps["ray"]["outcome"].out.count("dashboard:") == 1


@pytest.mark.ray
def test_bad_rows_fail_alone(sweeps, world):
    """Two bad presets (no target prompt; an empty scene folder) fail their rows before anything runs, an edit whose
    task fails fails its row when it runs; the others finish, each failure is one line (reason, run folder, log),
    the exit code is 1, and both executors report the same."""
    reasons = {}
    for name in ("in_process", "ray"):
        outcome, summary, folder = sweeps[name]["outcome"], sweeps[name]["json"], sweeps[name]["dir"]
        assert outcome.code == 1 and "Traceback" not in outcome.err
        failed = {r["key"]: r for r in summary["rows"] if r["status"] != "ok"}
        assert set(failed) == {
            *(f"{p}/{m}/seed0" for p in ("no-target", "empty-scene") for m in ("ids-edit", "dds-edit")),
            "sphere-green/dds-edit/seed0",
        }
        lines = [line for line in outcome.err.splitlines() if line.startswith("ids-batch: failed: ")]
        assert len(summary["failed"]) == 5 and all(f"ids-batch: failed: {f}" in lines for f in summary["failed"])
        text = "\n".join(lines)
        assert f"no-target ids-edit seed 0: --presets {world['bad']}: missing trg_prompt" in text
        assert f"empty-scene dds-edit seed 0: --presets {world['empty']}: its scene" in text and "empty" in text
        blocked = failed["sphere-green/dds-edit/seed0"]
        assert "Not a directory" in blocked["reason"] and "sphere-green dds-edit seed 0: NotADirectoryError" in text
        reasons[name] = {k: r["reason"].replace(str(folder), "OUT") for k, r in failed.items()}
        md = sweeps[name]["md"]
        assert "Failed (5):" in md and "no-target: CLIP text (↑)" in md  # failed scenes are in the table too
        green = next(line for line in md.splitlines() if line.startswith("| dds-edit | ") and "failed" in line)
        assert green.count("| failed") == 5 * 3  # sphere-green, no-target, empty-scene: 5 columns each
    assert reasons["in_process"] == reasons["ray"]


@pytest.mark.ray
def test_finished_runs_are_reused(sweeps):
    first, again = sweeps["in_process"]["json"], sweeps["again"]["json"]
    assert first["runs"] == again["runs"] and first["means"] == again["means"]
    assert all(r["reused"] for r in _good(again).values())
    assert "(reused)" in sweeps["again"]["outcome"].out


def _ray_config(world: dict, out: Path, **changes):
    """A one-edit Ray batch (ids-edit of sphere-blue, seed 7) on the local 2-CPU instance, two retries."""
    from ids_nerf.batch import BatchConfig, BatchEvalConfig, RayConfig
    from ids_nerf.guidance.prior import PriorConfig

    settings = dict(
        presets=(BLUE,),
        methods=("ids-edit",),
        seeds=(7,),
        data_root=world["data"],
        output_dir=out,
        recon_steps=10,
        edit_steps=10,
        save_every=2,
        prior=PriorConfig(model=str(world["prior"])),
        device="cpu",
        render_resolution=64,
        cpu_scenes=True,
        eval=BatchEvalConfig(random_weights=True, clip_model="ViT-B-32"),
        executor="ray",
        threads=1,
        n_bootstrap=100,
        ray=RayConfig(local_cpus=2, max_retries=2),
    )
    return BatchConfig(**{**settings, **changes})


def _killer(find_run: Callable[[], Path | None], checkpoints: str, killed: dict) -> threading.Thread:
    """A thread that kill -9s the worker of the attempt in the run folder ``find_run()`` gives (its batch_task.json)
    once a file matching ``checkpoints`` exists there, recording the pid and the checkpoint's step in ``killed``."""

    def kill_once_checkpointed() -> None:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and not killed:
            run = find_run()
            found = sorted(run.glob(checkpoints)) if run is not None else []
            if found and (run / "batch_task.json").is_file():
                pid = json.loads((run / "batch_task.json").read_text())["pid"]
                if pid != os.getpid():  # never this process
                    killed.update(pid=pid, step=int(found[-1].stem.split("-")[-1]))
                    os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=kill_once_checkpointed, daemon=True)
    thread.start()
    return thread


@pytest.mark.ray
def test_killed_edit_resumes_from_its_checkpoint(sweeps, world):
    """kill -9 the Ray worker of a running edit once it has a checkpoint: Ray retries the task, which resumes the
    edit from that checkpoint in a new attempt folder (first step > 0) and finishes it; the table is complete."""
    from ids_nerf.batch import run

    out = sweeps["ray"]["dir"]  # its reconstruction is reused
    first = out / "sphere-blue" / "ids-edit" / "seed7"
    killed: dict = {}
    killer = _killer(lambda: first, "edit_state/step-*.pt", killed)
    result = run(_ray_config(world, out))
    killer.join(timeout=10)
    assert killed, f"no checkpoint of {first} appeared"
    assert killed["step"] < 9, "the edit finished before it could be killed"
    (row,) = result["rows"]
    assert row["status"] == "ok" and result["failed"] == [], row
    resumed = Path(row["run"])
    assert resumed.name == "seed7-attempt2" and row["attempt"] == 2
    assert row["first_step"] > killed["step"] and row["first_step"] > 0
    assert (resumed / "nerfstudio_models" / "step-000000009.ckpt").is_file()  # the final checkpoint
    assert not (first / "nerfstudio_models" / "step-000000009.ckpt").exists()  # the killed attempt stopped
    task = json.loads((resumed / "batch_task.json").read_text())
    assert task["first_step"] == row["first_step"] and Path(task["resumed_from"]).parent == first / "nerfstudio_models"
    assert f"at step {row['first_step']} of 10" in " ".join((resumed / "batch.log").read_text().split())
    assert "| ids-edit | 1 |" in result["table"] and "Failed" not in result["table"]


@pytest.mark.ray
def test_killed_reconstruction_continues_from_its_checkpoint(world, tmp_path):
    """kill -9 the Ray worker of a running reconstruction once it has a checkpoint: Ray retries the task, which
    continues the reconstruction from that checkpoint in a new run folder (not from step 0); the edit then starts
    from the continued reconstruction's final checkpoint."""
    from ids_nerf.batch import run
    from ids_nerf.nerf.runs import read_run_config

    out = tmp_path / "out"
    recons = out / "sphere" / "ids-recon"
    out.mkdir()
    killed: dict = {}

    def first_reconstruction() -> Path | None:  # the killed one: the continuation starts after the kill
        started = sorted(recons.glob("*/batch_task.json"))
        return started[0].parent if started else None

    killer = _killer(first_reconstruction, "nerfstudio_models/step-*.ckpt", killed)
    result = run(_ray_config(world, out, recon_steps=200, save_every=4, edit_steps=2))
    killer.join(timeout=10)
    assert killed, "no checkpoint of the reconstruction appeared"
    assert killed["step"] < 199, "the reconstruction finished before it could be killed"
    (row,) = result["rows"]
    assert row["status"] == "ok" and result["failed"] == [], row
    continued = Path(row["reconstruction"]).parent
    task = json.loads((continued / "batch_task.json").read_text())
    assert task["first_step"] >= killed["step"] + 1 > 0 and task["resumed_from"] is not None
    saved = read_run_config(continued / "config.yml")
    assert saved.load_step + 1 == task["first_step"] and saved.load_step + saved.max_num_iterations == 199
    assert (continued / "nerfstudio_models" / "step-000000199.ckpt").is_file()
    assert len(list(recons.iterdir())) == 2  # the killed run and its continuation


def test_a_worker_without_the_output_dir_fails_its_task(world, tmp_path):
    """On a cluster without a shared file system the driver's marker file is missing on the worker: the task fails
    at once with that message instead of writing runs nobody sees."""
    from ids_nerf.batch import BatchConfig
    from ids_nerf.batch.tasks import EditSpec, ReconSpec, TaskEnv, edit_task, reconstruct_task

    cfg = BatchConfig(presets=(BLUE,), methods=("ids-edit",), data_root=world["data"], output_dir=tmp_path / "out")
    env = TaskEnv(capture="file", threads=1, marker=str(tmp_path / "out" / ".ids-batch" / "driver-x"))
    recon = ReconSpec(data=world["data"] / "toy" / "sphere", kind="nerfacto", template="ids-edit", scene="toy/sphere")
    edit = EditSpec(preset=BLUE, name="sphere-blue", method="ids-edit", seed=0, recon=recon.key)
    for record in (reconstruct_task(cfg, recon, env), edit_task(cfg, edit, None, env)):
        assert record["status"] == "failed"
        assert "cannot see the driver's --output-dir" in record["reason"] and "shared" in record["reason"]
    assert not (tmp_path / "out").exists()


def test_executor_ray_without_ray_is_one_paragraph(world, tmp_path, monkeypatch):
    from ids_nerf.batch import entrypoint

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    out = tmp_path / "out"
    before = snapshot(out)
    outcome = in_process(entrypoint, _argv(world, out, "--executor", "ray"))
    assert_refused(outcome, ["--executor ray", 'pip install "ids_nerf[ray]"'], before, snapshot(out))


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (("--ray.address", "auto"), ["--ray.address", "--executor ray"]),
        (("--reference", "cds-edit"), ["--reference cds-edit", "--methods"]),
        (("--seeds", "1", "1"), ["--seeds 1 1"]),
        (("--save-every", "0"), ["--save-every must be >= 1 (got 0)"]),
        (("--executor", "ray", "--ray.gpus-per-edit", "1.5"), ["--ray.gpus-per-edit 1.5"]),
        (("--executor", "ray", "--ray.address", "auto", "--ray.local-cpus", "2"), ["--ray.local-cpus"]),
        (("--executor", "ray", "--ray.address", "127.0.0.1:1"), ["--ray.address 127.0.0.1:1", "ray start --head"]),
    ],
)
def test_bad_flags_are_refused(world, tmp_path, extra, names):
    from ids_nerf.batch import entrypoint

    out = tmp_path / "out"
    before = snapshot(out)
    assert_refused(in_process(entrypoint, _argv(world, out, *extra)), names, before, snapshot(out))


@pytest.mark.ray
def test_a_task_larger_than_the_local_instance_is_refused(world, tmp_path):
    """Ray would keep such a task waiting forever: ids-batch stops the instance it started and says so."""
    from ids_nerf.batch import entrypoint

    out = tmp_path / "out"
    before = snapshot(out)
    argv = _argv(world, out, "--executor", "ray", "--ray.local-cpus", "1", "--ray.cpus-per-edit", "2")
    names = ["--ray.cpus-per-edit 2", "largest Ray node has 1 CPUs"]
    assert_refused(in_process(entrypoint, argv), names, before, snapshot(out))


def test_nothing_to_run_is_refused(world, tmp_path):
    """Every preset unusable, or a bad --methods: exit 2, nothing written (a bad preset among good ones fails its
    rows only, above)."""
    from ids_nerf.batch import entrypoint

    out = tmp_path / "out"
    before = snapshot(out)
    fern = PRESETS_DIR / "llff" / "fern-autumn.yaml"
    argv = ["ids-batch", "--presets", str(fern), "--data-root", str(tmp_path / "none"), "--output-dir", str(out)]
    assert_refused(in_process(entrypoint, argv), [f"--presets {fern}", "does not exist"], before, snapshot(out))
    argv = ["ids-batch", "--presets", str(BLUE), "--methods", "nerfacto", "--output-dir", str(out)]
    assert_refused(in_process(entrypoint, argv), ["--methods nerfacto"], before, snapshot(out))


def test_grouped_bootstrap_weighs_scenes_equally_and_covers_both_levels():
    from ids_nerf.stats import bootstrap_ci, grouped_bootstrap_ci, paired_differences

    rng = np.random.default_rng(0)
    values = np.array([1.0, 1.2, 0.8, 5.0, np.nan])  # scene a: three seeds, scene b: one (and one failed)
    mean, lo, hi = grouped_bootstrap_ci(values, ["a", "a", "a", "b", "b"], 500, rng)
    assert mean == pytest.approx((1.0 + 5.0) / 2) and lo < mean < hi
    assert lo >= 0.8 - 1e-9 and hi <= 5.0 + 1e-9
    one = np.array([2.0, 3.0, 4.0, 5.0])  # one scene: a plain bootstrap over its seeds
    g = grouped_bootstrap_ci(one, ["s"] * 4, 2000, np.random.default_rng(1))
    b = bootstrap_ci(one, 2000, np.random.default_rng(1))
    assert g[0] == b[0] == 3.5 and abs(g[1] - b[1]) < 0.3 and abs(g[2] - b[2]) < 0.3
    assert all(math.isnan(x) for x in grouped_bootstrap_ci(np.array([np.nan]), ["a"], 10, rng))
    rows = {"x": [{"m": 2.0}, {"m": 3.0}, {"m": None}], "ref": [{"m": 1.0}, {"m": 1.0}, {"m": 1.0}]}
    paired = paired_differences(rows, "ref", ("m",), 200, 0, groups=["a", "b", "b"])
    assert paired["x"]["m"][0] == pytest.approx(1.5)  # the pair with a missing value is dropped
