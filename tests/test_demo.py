"""ids-nerf-demo end to end at a tiny size: a finished reconstruction is reused by --overwrite, also when the
command is run from another folder than the first time, or the folder was moved (the runs are read from where the
folder is now, whatever paths their config.yml files hold)."""

from __future__ import annotations

from pathlib import Path

from ids_nerf.nerf.demo import NerfDemoConfig, run


def _tiny(out: Path, **kw) -> NerfDemoConfig:
    return NerfDemoConfig(
        out=out, scene="splat", n_train_views=4, recon_steps=10, edit_steps=2, device="cpu", seed=0, **kw
    )


def test_overwrite_of_a_moved_folder_from_another_folder_reuses_the_reconstruction(tmp_path, monkeypatch):
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    grid = run(_tiny(Path("demo")))
    assert (tmp_path / "first" / grid).is_file()
    checkpoints = sorted((tmp_path / "first" / "demo" / "runs").glob("toy/*/recon/nerfstudio_models/step-*.ckpt"))
    assert len(checkpoints) == 1
    written = checkpoints[0].stat().st_mtime_ns
    (tmp_path / "first" / grid).unlink()
    moved = tmp_path / "moved"
    (tmp_path / "first").rename(moved)

    monkeypatch.chdir(tmp_path / "second")
    grid = run(_tiny(Path("../moved/demo"), overwrite=True))
    assert grid.is_file() and grid.resolve() == (moved / "demo" / "side_by_side.png").resolve()
    checkpoint = moved / checkpoints[0].relative_to(tmp_path / "first")
    assert checkpoint.stat().st_mtime_ns == written  # the reconstruction was reused, not trained again
    assert not any((tmp_path / "second").iterdir())  # nothing was written where the command ran
