"""IDSEditTrainer: nerfstudio's Trainer for editing a pretrained scene (nerfacto or splatfacto).

Differences from the stock Trainer, each fixing a pitfall of earlier scene-editing plugins:
- inputs are validated before anything loads (prompts, --load-dir, checkpoint method, output folder);
- the scene's model and dataparser configs are taken from the source run's ``config.yml``, so any nerfacto or
  splatfacto checkpoint (camera optimizer, appearance embedding, hash-grid sizes, SH degree) loads and the scene
  frame matches;
- the optimizers are built after the scene is loaded, so they hold the loaded parameters (a splatfacto checkpoint
  replaces the model's Gaussians with tensors of another size: nerfstudio 1.1.5's trainer keeps optimizing the
  discarded ones, and an edit can finish without changing the scene, instruct-gs2gs issue 24);
- editing runs exactly ``--max-num-iterations`` steps, whatever step the source checkpoint was saved at, with
  fresh optimizers (the editing learning-rate schedule), and never writes into the source run's folder;
- each step calls :meth:`IDSEditPipeline.edit_step`, which backpropagates into the scene itself;
- the diffusion prior is checked before anything is written (model resolvable, device/dtype combination) and
  loaded before the scene, so that a prior error is one paragraph naming the ``ns-train`` flag, exit code 2, and
  no run folder is left behind.

``ns-train`` writes ``config.yml`` before it builds the trainer; :meth:`IDSEditTrainerConfig.save_config` runs the
checks instead and the trainer writes the (source-adopted) config once the prior has loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from ids_nerf.console import exit_on_user_error
from ids_nerf.errors import UserError, UserInputError
from ids_nerf.nerf.checkpoints import checkpoint_step, load_checkpoint
from ids_nerf.nerf.edit_config import NERF_PRIOR_FLAGS
from ids_nerf.nerf.interrupts import InterruptibleTraining
from ids_nerf.nerf.pipeline import IDSEditPipelineConfig
from ids_nerf.profiling import phase
from ids_nerf.scenes.kinds import SCENE_KINDS, SceneKind, kind_of_model


class EditSetupError(UserError):
    """An ids-edit run cannot start; the message says what to fix."""


@dataclass
class IDSEditTrainerConfig(TrainerConfig):
    """Trainer of an editing run (ids-edit, ids-splat-edit, ...): a pretrained scene given by --load-dir, or the
    newest reconstruction of --data."""

    _target: type = field(default_factory=lambda: IDSEditTrainer)
    pipeline: IDSEditPipelineConfig = field(default_factory=IDSEditPipelineConfig)
    """Editing pipeline."""
    adopt_source_config: bool = True
    """Take the NeRF model and dataparser settings from the source run's config.yml (next to --load-dir), so the
    checkpoint and the scene frame always match."""
    recon_steps: int = 30000
    """Without --load-dir, the newest finished reconstruction of --data under --output-dir is edited (of the method's
    scene kind: nerfacto for *-edit, splatfacto for *-splat-edit); when there is none, a reconstruction of this many
    steps runs first (ids-recon or ids-splat-recon), in its own run folder kept as the source run (30,000: nerfacto's
    and splatfacto's default)."""
    edit_anew: bool = False
    """With --load-dir of an edit run: start a new edit of its edited scene (step 0, fresh optimizers, the prompts
    given here) instead of resuming the interrupted edit."""

    def prepare(self) -> SourceScene:
        """Every check that needs no model, then adopt the source run's settings; returns what to load.

        Idempotent (ns-train calls it through :meth:`save_config`, the trainer again). Raises
        :class:`EditSetupError` / :class:`~ids_nerf.errors.UserError` with what to fix.
        """
        g = self.pipeline.guidance
        if g.preset is not None:
            from ids_nerf.presets import apply_preset, load_preset

            apply_preset(self, load_preset(g.preset, "--pipeline.guidance.preset"), g.preset_data_root)
        given_data = self.data or self.pipeline.datamanager.data
        source = locate_source(self)
        if source.checkpoint is not None:
            from ids_nerf.nerf.checkpoints import check_checkpoint

            check_checkpoint(source.checkpoint, self.checkpoint_flag())
        if source.resume:
            adopt_edit_run(self, source)
        validate_edit_config(self)
        if source.checkpoint is not None:
            if self.adopt_source_config and not source.resume:
                adopt_source_config(self, source.checkpoint)
            _check_output_dir(self, source.checkpoint)
        _check_data(self, given_data is not None, source.checkpoint)
        _check_region(self, source)
        from ids_nerf.guidance.prior import check_prior

        check_prior(self.pipeline.guidance.prior_config(self.machine.device_type), NERF_PRIOR_FLAGS)
        return source

    def print_to_terminal(self) -> None:
        """ns-train prints the whole config (~230 lines) before it saves it: validate first, so that bad input ends
        with its one-paragraph error alone."""
        with exit_on_user_error(f"ns-train {self.method_name}"):
            self.prepare()
        super().print_to_terminal()

    def save_config(self) -> None:
        """Called by ns-train before the trainer exists: validate only (exit 2 on bad input, nothing written); the
        trainer writes config.yml once the source settings are adopted and the prior has loaded."""
        with exit_on_user_error(f"ns-train {self.method_name}"):
            self.prepare()

    def write_config(self) -> None:
        """Write ``<run>/config.yml`` (nerfstudio's own :meth:`TrainerConfig.save_config`)."""
        super().save_config()

    def checkpoint_flag(self) -> str:
        """How the user named the source checkpoint (for messages about it)."""
        if self.load_checkpoint is not None:
            return "--load-checkpoint"
        if self.load_dir is not None:
            return f"--load-dir {self.load_dir}"
        return f"--data {self.data or self.pipeline.datamanager.data}: its newest reconstruction"

    def scene_kind(self) -> SceneKind:
        """The scene kind this method edits (from its model config)."""
        kind = kind_of_model(self.pipeline.model)
        if kind is None:
            raise EditSetupError(
                f"{self.method_name}: --pipeline.model is a {type(self.pipeline.model).__name__}; editing methods "
                f"edit {' or '.join(k.label for k in SCENE_KINDS.values())}s."
            )
        return kind


@dataclass(frozen=True)
class SourceScene:
    """What an editing run starts from."""

    checkpoint: Path | None
    """The checkpoint to load; None: no reconstruction of --data yet, reconstruct first."""
    resume: bool = False
    """The checkpoint belongs to an interrupted edit, which continues."""
    edit: Any = None
    """With ``resume``: the interrupted edit's saved config (its config.yml)."""
    note: str = ""
    """One line for the console saying where the scene comes from (and how to choose another)."""


def _edit_run_config(checkpoint: Path) -> Any | None:
    """The saved config of the run holding ``checkpoint`` if that run is an edit (ids-edit, dds-edit, ...)."""
    from ids_nerf.nerf.runs import read_run_config

    config_yml = checkpoint.parent.parent / "config.yml"
    config = read_run_config(config_yml) if config_yml.is_file() else None
    return config if isinstance(getattr(config, "pipeline", None), IDSEditPipelineConfig) else None


def locate_source(config: IDSEditTrainerConfig) -> SourceScene:
    """The checkpoint given by --load-dir / --load-checkpoint (an edit run's: resume it unless --edit-anew), else the
    newest finished reconstruction of --data under --output-dir, else none (reconstruct first)."""
    if config.load_dir is not None or config.load_checkpoint is not None:
        checkpoint = find_checkpoint(config)
        edit = _edit_run_config(checkpoint)
        if edit is None:
            return SourceScene(checkpoint)
        if config.edit_anew:
            return SourceScene(checkpoint, note=f"Editing the edited scene of {checkpoint} anew (--edit-anew).")
        return SourceScene(checkpoint, resume=True, edit=edit)
    from ids_nerf.nerf.runs import find_reconstruction

    data = config.data or config.pipeline.datamanager.data
    if data is None:
        raise EditSetupError(
            f"{config.method_name} needs a scene: pass --data <scene folder> (its newest reconstruction under "
            "--output-dir is edited, or one is trained first) or --load-dir <run>/nerfstudio_models."
        )
    found = find_reconstruction(Path(config.output_dir), Path(data), config.scene_kind())
    if found is None:
        return SourceScene(None)
    older = f" (newest of {found.others + 1})" if found.others else ""
    return SourceScene(
        found.checkpoint,
        note=f"Editing the reconstruction {found.run}{older} of {data}; to edit another, pass "
        "--load-dir <its run>/nerfstudio_models.",
    )


def adopt_edit_run(config: IDSEditTrainerConfig, source: SourceScene) -> None:
    """Resuming an edit: take its pipeline (scene, prompts, guidance, render settings), seed, step count and
    optimizers from its config.yml. Prompts given on the command line must be the edit's own."""
    edit, checkpoint = source.edit, source.checkpoint
    assert edit is not None and checkpoint is not None
    run = checkpoint.parent.parent
    try:
        step, total = checkpoint_step(checkpoint), int(edit.max_num_iterations)
    except ValueError:
        raise EditSetupError(f"{checkpoint}: not a nerfstudio checkpoint name (step-<n>.ckpt).") from None
    if step + 1 >= total:
        raise EditSetupError(
            f"{checkpoint} is the last step of its edit ({total} steps): nothing to resume. Add --edit-anew to edit "
            "its result again."
        )
    if edit.method_name != config.method_name:
        raise EditSetupError(
            f"--load-dir {checkpoint.parent} is an interrupted {edit.method_name} run: resume it with "
            f"`ns-train {edit.method_name} --load-dir {checkpoint.parent}`, or add --edit-anew to edit its result "
            f"with {config.method_name}."
        )
    mine, theirs = config.pipeline.guidance, edit.pipeline.guidance
    for flag, given, saved in (
        ("--pipeline.guidance.src-prompt", mine.src_prompt, theirs.src_prompt),
        ("--pipeline.guidance.trg-prompt", mine.trg_prompt, theirs.trg_prompt),
    ):
        if given.strip() and given.strip() != saved.strip():
            raise EditSetupError(
                f"{flag} {given!r} differs from the interrupted edit's {saved!r} ({run}): drop the flag to resume "
                "that edit, or add --edit-anew to edit its result with the new prompts."
            )
    config.pipeline = copy.deepcopy(edit.pipeline)
    config.data = None
    config.machine.seed, config.max_num_iterations = edit.machine.seed, edit.max_num_iterations
    if config.experiment_name is None:  # the resumed run's folder sits next to the interrupted one's
        config.experiment_name = edit.experiment_name
    config.optimizers = copy.deepcopy(edit.optimizers)


def find_checkpoint(config: TrainerConfig) -> Path:
    """The source checkpoint file given by --load-dir (+ --load-step) or --load-checkpoint."""
    if config.load_checkpoint is not None:
        path = Path(config.load_checkpoint)
        if not path.is_file():
            raise EditSetupError(f"--load-checkpoint {path} does not exist.")
        return path
    assert config.load_dir is not None
    load_dir = Path(config.load_dir)
    ckpts = sorted(load_dir.glob("step-*.ckpt")) if load_dir.is_dir() else []
    if not ckpts:
        raise EditSetupError(
            f"--load-dir {load_dir} contains no step-*.ckpt checkpoint; point it at a run's nerfstudio_models/ folder."
        )
    if config.load_step is not None:
        path = load_dir / f"step-{config.load_step:09d}.ckpt"
        if not path.is_file():
            raise EditSetupError(
                f"--load-step {config.load_step}: {path} does not exist; available: " + ", ".join(p.name for p in ckpts)
            )
        return path
    return ckpts[-1]


def validate_edit_config(config: IDSEditTrainerConfig) -> None:
    """Checks that need no model: prompts present and different, trainer options the editing step supports."""
    if config.mixed_precision or config.use_grad_scaler:
        flag = "--mixed-precision" if config.mixed_precision else "--use-grad-scaler"
        raise EditSetupError(
            f"{flag} True is not supported by {config.method_name}: its editing step backpropagates the guidance "
            "gradient into the scene itself (a NeRF in ray chunks), outside nerfstudio's autocast and gradient-scaler "
            "path, so the scene is edited in float32. Drop the flag. To save memory, use "
            "--pipeline.guidance.prior.dtype float16 (the diffusion prior in half precision, the default on CUDA), a "
            "smaller --pipeline.render.chunk-size (NeRF), or --pipeline.render.downscale 2."
        )
    from ids_nerf.guidance.validation import at_least, check_config, check_guidance, check_number

    g = config.pipeline.guidance
    check_guidance(g, "--pipeline.guidance.")  # every number finite and in range, named as ns-train spells it
    check_config(config.pipeline.render, "--pipeline.render.")
    check_number(config.max_num_iterations, "--max-num-iterations", at_least(1))
    check_number(config.recon_steps, "--recon-steps", at_least(1))
    g.source.check(
        g.score,
        cache=g.cache_dir is not None,
        prefix="--pipeline.guidance.source",
        cache_flag="--pipeline.guidance.cache-dir",
    )
    if not g.src_prompt.strip():
        raise EditSetupError(
            '--pipeline.guidance.src-prompt is empty: describe the original scene, e.g. "a photo of a '
            'red sphere on a checkered floor".'
        )
    if not g.trg_prompt.strip():
        raise EditSetupError(
            '--pipeline.guidance.trg-prompt is empty: describe the edited scene, e.g. "a photo of a '
            'blue sphere on a checkered floor".'
        )
    if g.src_prompt.strip() == g.trg_prompt.strip():
        raise EditSetupError(
            "--pipeline.guidance.src-prompt and --pipeline.guidance.trg-prompt are identical: the "
            "edit would do nothing. Describe the wanted change in the target prompt."
        )


def _wrong_kind_message(config: IDSEditTrainerConfig, where: str, method: str, found: SceneKind | None) -> str:
    kind = config.scene_kind()
    text = f"{where} was trained with method {method!r}; {config.method_name} edits {kind.label}s."
    if found is not None:  # the other scene kind: name the editing method that takes it
        from ids_nerf.scenes.kinds import editing_methods

        spec, _ = editing_methods()[config.method_name]
        return f"{text} It is a {found.label}: edit it with `ns-train {found.edit_method(spec)}`."
    return f"{text} Train one with {kind.train_hint}."


def adopt_source_config(config: IDSEditTrainerConfig, checkpoint: Path) -> None:
    """Copy the source run's scene model settings and dataparser (from ``<run>/config.yml``) into ``config``; the
    edit's own model options (those a stock nerfacto/splatfacto config does not have) are kept."""
    kind = config.scene_kind()
    source_yml = checkpoint.parent.parent / "config.yml"
    if not source_yml.is_file():
        CONSOLE.print(f"[yellow]No config.yml next to {checkpoint.parent}; assuming default {kind.name} settings.")
        return
    source = yaml.load(source_yml.read_text(), Loader=yaml.Loader)
    model = getattr(getattr(source, "pipeline", None), "model", None)
    found = kind_of_model(model)
    if found is not kind:
        method = getattr(source, "method_name", type(model).__name__)
        raise EditSetupError(_wrong_kind_message(config, f"The checkpoint in {checkpoint.parent}", method, found))
    values = {f.name: getattr(model, f.name) for f in fields(kind.source_model_config) if f.name != "_target"}
    config.pipeline.model = dataclasses.replace(config.pipeline.model, **values)
    dataparser = source.pipeline.datamanager.dataparser
    user_data = config.data or config.pipeline.datamanager.data
    # without --data: the source run's own data folder (its datamanager's; a dataparser saved by nerfstudio may hold
    # its class default, e.g. Blender's data/blender/lego, when the run was given its data through --data)
    run_data = next(d for d in (source.pipeline.datamanager.data, source.data, dataparser.data) if d is not None)
    config.pipeline.datamanager.dataparser = dataparser
    config.pipeline.datamanager.data = Path(user_data if user_data is not None else run_data)


def span_schedules(config: TrainerConfig) -> None:
    """Make every learning-rate schedule span the editing steps (--max-num-iterations)."""
    for opt in config.optimizers.values():
        scheduler = opt.get("scheduler")
        if scheduler is not None and hasattr(scheduler, "max_steps"):
            scheduler.max_steps = config.max_num_iterations


def _check_data(config: TrainerConfig, given: bool, checkpoint: Path | None) -> None:
    """The data folder holds data the dataparser reads, complete and readable (every file it will open), checked
    before anything is written (:func:`~ids_nerf.nerf.dataparsers.validate.validate_scene_data`). ``given``: the
    user passed --data (else it is the source run's own, recorded in its config.yml)."""
    from ids_nerf.nerf.dataparsers.validate import SPLITS_TRAIN, validate_scene_data

    dm = config.pipeline.datamanager
    data = dm.data if dm.data is not None else dm.dataparser.data
    if data is None:
        return
    flag = "--data"
    if not given and checkpoint is not None:
        run_yml = checkpoint.parent.parent / "config.yml"
        flag = f"{config.checkpoint_flag()}: the source run's data (recorded in {run_yml}; pass --data if it moved)"
    try:
        validate_scene_data(Path(data), flag, dm.dataparser, SPLITS_TRAIN)
    except UserInputError as err:
        raise EditSetupError(str(err)) from None


def _check_region(config: IDSEditTrainerConfig, source: SourceScene) -> None:
    """A region (--pipeline.region.*) is checked against the scene's training images and bounds (and, for a splat
    scene, its Gaussians) before anything is written."""
    region = config.pipeline.region
    if not region.enabled():
        return
    from ids_nerf.nerf.region import check_box, check_region

    check_box(region.box, "--pipeline.region.box")  # its shape first: no data is read for a malformed box
    dm = config.pipeline.datamanager
    dataparser = copy.deepcopy(dm.dataparser)
    dataparser.data = dm.data if dm.data is not None else dataparser.data
    outputs = dataparser.setup().get_dataparser_outputs(split="train")
    means = None
    if source.checkpoint is not None and config.scene_kind().name == "splat":
        means = load_checkpoint(source.checkpoint)["pipeline"].get("_model.gauss_params.means")
    check_region(region, outputs, means)


def _check_output_dir(config: TrainerConfig, checkpoint: Path) -> None:
    source_run = checkpoint.parent.parent.resolve()
    new_run = config.get_base_dir().resolve()
    if new_run == source_run or source_run in new_run.parents:
        raise EditSetupError(
            f"The edit would write into the source run {source_run}; choose another --output-dir, "
            "--experiment-name or --timestamp."
        )


def load_source_scene(pipeline: Any, checkpoint: Path, method_name: str, flag: str | None = None) -> int:
    """Load the scene of ``checkpoint`` into ``pipeline`` (a splat scene takes the checkpoint's Gaussian count);
    returns the step it was saved at. Raises :class:`EditSetupError` for a checkpoint of another scene kind or model.
    Build the optimizers after this call: they must hold the loaded parameters."""
    kind = kind_of_model(pipeline.config.model)
    assert kind is not None
    state = load_checkpoint(checkpoint, flag)
    if not kind.checkpoint_matches(state):
        found = next((k for k in SCENE_KINDS.values() if k.checkpoint_matches(state)), None)
        hint = f" It holds a {found.label}." if found is not None else ""
        raise EditSetupError(
            f"{checkpoint} is not a {kind.label} checkpoint (no {', '.join(kind.checkpoint_keys)}* weights); "
            f"{method_name} edits {kind.label}s.{hint}"
        )
    pipeline.load_pipeline(state["pipeline"], state["step"])
    return int(state["step"])


class IDSEditTrainer(InterruptibleTraining, Trainer):
    """Trainer driving :class:`IDSEditPipeline` for exactly ``max_num_iterations`` editing steps."""

    config: IDSEditTrainerConfig

    def __init__(self, config: IDSEditTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        with exit_on_user_error(f"ns-train {config.method_name}"):
            source = config.prepare()
        if source.checkpoint is None:
            source = self._reconstruct_first(config)
        elif source.note:
            CONSOLE.print(source.note)
        self.source = source
        self.source_checkpoint: Path = source.checkpoint  # type: ignore[assignment]
        self.edit_steps_total = config.max_num_iterations
        if not source.resume:  # a resumed edit keeps the checkpoint its edit started from
            config.pipeline.source_checkpoint = source.checkpoint
        self._resume_state: dict[str, Any] | None = None
        span_schedules(config)
        super().__init__(config, local_rank, world_size)

    @staticmethod
    def _reconstruct_first(config: IDSEditTrainerConfig) -> SourceScene:
        """No reconstruction of --data yet: train one (ids-recon, --recon-steps), then edit it."""
        from nerfstudio.scripts.train import _set_random_seed

        from ids_nerf.nerf.runs import reconstruction_config, train_run

        recon = reconstruction_config(config, config.recon_steps)
        recon.set_timestamp()
        data = config.data or config.pipeline.datamanager.data
        CONSOLE.print(
            f"No finished {config.scene_kind().name} reconstruction of {data} under {config.output_dir}: "
            f"reconstructing it first ({config.recon_steps} {recon.method_name} steps, --recon-steps) in "
            f"{recon.get_base_dir()}, then editing it."
        )
        train_run(recon)
        config.load_dir = recon.get_checkpoint_dir()
        _set_random_seed(config.machine.seed)  # the edit starts from the state ns-train gives a fresh run
        with exit_on_user_error(f"ns-train {config.method_name}"):
            source = config.prepare()
        CONSOLE.print(f"Reconstruction done: editing {source.checkpoint}.")
        return source

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        """Load the diffusion prior first (a prior error exits 2 before anything is written), write config.yml,
        then build the pipeline and load the source scene (or the interrupted edit). Ctrl-C / SIGTERM here: exit
        130 / 143 with one line, and nothing of this run is kept (no step was edited)."""
        from ids_nerf.console import exit_on_interrupt

        message = "interrupted while setting up the edit, before its first step; nothing to resume (no run folder kept)"
        with exit_on_interrupt(f"ns-train {self.config.method_name}", lambda: message):
            try:
                self._setup(test_mode)
            except KeyboardInterrupt:
                self._remove_run_folder()
                raise

    def _setup(self, test_mode: Literal["test", "val", "inference"]) -> None:
        from ids_nerf.guidance.prior import DiffusionPrior

        guidance = self.config.pipeline.guidance
        with exit_on_user_error(f"ns-train {self.config.method_name}"):
            prior = DiffusionPrior(guidance.prior_config(self.device), flags=NERF_PRIOR_FLAGS)
        if self.local_rank == 0:
            self.config.write_config()
        super().setup(test_mode)
        self.pipeline.set_seed(self.config.machine.seed)  # type: ignore[attr-defined]  # the run's one seed
        self.pipeline.set_prior(prior)  # type: ignore[attr-defined]
        if self._resume_state is not None:
            self.pipeline.load_random_state(self._resume_state)  # type: ignore[attr-defined]

    def _load_checkpoint(self) -> None:
        if self.source.resume:
            self._resume_edit()
            return
        with exit_on_user_error(f"ns-train {self.config.method_name}"):
            source_step = load_source_scene(
                self.pipeline, self.source_checkpoint, self.config.method_name, self.config.checkpoint_flag()
            )
        self.optimizers = self.setup_optimizers()  # over the loaded parameters (a splat's are new tensors)
        self._start_step = 0  # exactly max_num_iterations editing steps, whatever the source step
        CONSOLE.print(
            f"Editing the scene of {self.source_checkpoint} (source step {source_step}); "
            f"{self.config.max_num_iterations} editing steps, fresh optimizers."
        )

    def _resume_edit(self) -> None:
        """Continue an interrupted edit: its scene, optimizer and scheduler states, step count and random streams."""
        from ids_nerf.nerf.resume import load_edit_state

        with exit_on_user_error(f"ns-train {self.config.method_name}"):
            state = load_checkpoint(self.source_checkpoint, self.config.checkpoint_flag())
        step, total = int(state["step"]), self.config.max_num_iterations
        self.pipeline.load_pipeline(state["pipeline"], step)
        self.optimizers = self.setup_optimizers()  # over the loaded parameters (a splat's are new tensors)
        self.optimizers.load_optimizers(state["optimizers"])
        self.optimizers.load_schedulers(state["schedulers"])
        self._start_step = step + 1
        self._resume_state = load_edit_state(self.source_checkpoint)
        streams = "random streams restored" if self._resume_state else "random streams restarted (no edit state saved)"
        CONSOLE.print(
            f"Resuming the edit {self.source_checkpoint.parent.parent} at step {step + 1} of {total} "
            f"(optimizers, schedulers, {streams}); this run: {self.base_dir}."
        )

    def train(self) -> None:
        """nerfstudio's loop runs ``max_num_iterations`` steps from the start step: a resumed edit runs the rest.
        Interruptions: :class:`~ids_nerf.nerf.interrupts.InterruptibleTraining`."""
        total = self.config.max_num_iterations
        self.config.max_num_iterations = total - self._start_step
        self.edit_steps_total = total
        try:  # guidance that stays non-finite (NonFiniteGuidanceError) ends the edit with its message, exit 2
            with exit_on_user_error(f"ns-train {self.config.method_name}"):
                super().train()
        finally:
            self.config.max_num_iterations = total

    def total_steps(self) -> int:
        """The edit's steps, a resumed edit's included."""
        return self.edit_steps_total

    def resume_command(self) -> str:
        """``ns-train <method> --load-dir <the run's checkpoints>`` (+ where and on what it ran, when not nerfstudio's
        defaults): the resume path continues the edit's steps, optimizers and random streams."""
        run = self.checkpoint_dir if self.has_checkpoint() else self.source_checkpoint.parent
        words = ["ns-train", self.config.method_name, "--load-dir", str(run), *self.machine_flags()]
        return shlex.join(words)

    def _update_viewer_state(self, step: int) -> None:
        """nerfstudio's viewer update, plus the panel's step counter at every step (nerfstudio refreshes it only
        when it re-renders, which a slow editing step may never reach)."""
        super()._update_viewer_state(step)
        if self.viewer_state is not None:
            self.viewer_state.update_step(step)

    def save_checkpoint(self, step: int) -> None:
        """nerfstudio's checkpoint, plus the edit's random streams next to it (what a resumed edit continues)."""
        from ids_nerf.nerf.resume import save_edit_state

        super().save_checkpoint(step)
        save_edit_state(
            self.checkpoint_dir, step, self.pipeline.random_state(), self.config.save_only_latest_checkpoint
        )

    def train_iteration(self, step: int):  # type: ignore[override]
        """One editing step, honouring --gradient-accumulation-steps (per parameter group) and --log-gradients
        as nerfstudio's Trainer does; the backward pass happens inside :meth:`IDSEditPipeline.edit_step`. A stop
        requested since the last step (Ctrl-C, SIGTERM) happens here, before anything of this step changes."""
        self.stop_point()
        groups = list(self.optimizers.parameters.keys())
        accumulate = self.gradient_accumulation_steps
        self.optimizers.zero_grad_some([g for g in groups if step % accumulate[g] == 0])
        loss_dict, metrics_dict = self.pipeline.edit_step(step)  # type: ignore[attr-defined]
        if self.config.log_gradients:
            norms = {
                tag: value.grad.norm()
                for tag, value in self.pipeline.model.named_parameters()
                if value.grad is not None
            }
            metrics_dict.update({f"Gradients/{tag}": norm for tag, norm in norms.items()})
            metrics_dict["Gradients/Total"] = functools.reduce(torch.add, norms.values(), torch.zeros(()))
        with phase("optimizer step"):
            needs_step = [g for g in groups if step % accumulate[g] == accumulate[g] - 1]
            self.optimizers.optimizer_scaler_step_some(self.grad_scaler, needs_step)  # scaler disabled: plain step
            self.optimizers.scheduler_step_all(step)
        loss = functools.reduce(torch.add, loss_dict.values())
        return loss, loss_dict, metrics_dict
