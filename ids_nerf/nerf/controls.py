"""Viewer panel of an edit.

nerfstudio's viewer discovers ``ViewerElement`` attributes of the pipeline. While an edit runs (``ns-train``), the
panel holds the live controls (target prompt, guidance scale, FPR on/off, pause, the edit region: take over the
viewer's crop box, or the whole scene), a status line (editing step, steps left, the region, the last change) and the
before/after switch. Opened with ``ns-viewer`` on a finished run, it shows the run's prompts, method and region
read-only, and the before/after switch.

Every control change is acknowledged: printed on the console, written to tensorboard (text, with the step) and to
``<run>/edit_changes.jsonl``, and shown in the status line.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nerfstudio.viewer.viewer_elements import ViewerButton, ViewerCheckbox, ViewerElement, ViewerNumber, ViewerText

from ids_nerf.nerf.edit_config import NerfGuidanceConfig
from ids_nerf.nerf.region import RegionConfig, box_of


class EditControls:
    """State shared between the viewer thread and the editing loop."""

    def __init__(
        self,
        guidance: NerfGuidanceConfig,
        live: bool,
        method: str = "",
        on_before_after: Callable[[bool], str] | None = None,
        region: RegionConfig | None = None,
        on_region: Callable[[RegionConfig], str] | None = None,
    ) -> None:
        self.guidance = guidance
        self.live = live
        self.method = method
        self.region = region if region is not None else RegionConfig()
        self.on_region = on_region
        self.target_prompt = guidance.trg_prompt
        self.trainer: Any = None
        self.run_dir: Path | None = None
        self.progress = "starting"
        self.last_change = ""
        self.on_before_after = on_before_after
        self._status: ViewerText | None = None
        self._before_after_status: ViewerText | None = None

    def attach_trainer(self, trainer: Any) -> None:
        """Let the pause checkbox pause the trainer's loop; changes are logged in its run folder."""
        self.trainer = trainer
        base_dir = getattr(trainer, "base_dir", None)
        self.run_dir = Path(base_dir) if base_dir is not None else None

    def elements(self) -> dict[str, ViewerElement]:
        """Viewer elements to set as pipeline attributes (the attribute names are their tree paths)."""
        before_after = ViewerCheckbox(
            "Before/after: source scene",
            False,
            cb_hook=self._on_before_after,
            hint="Also render the source scene (loaded now, frozen, never saved into the edit): outputs source_rgb, "
            "source_depth and depth_change appear in the output list and the split screen.",
        )
        self._before_after_status = ViewerText("Source scene", "not loaded", disabled=True)
        if not self.live:
            return {
                "edit_method": ViewerText("Method", self.method or "-", disabled=True),
                "edit_source_prompt": ViewerText("Source prompt", self.guidance.src_prompt, disabled=True),
                "edit_target_prompt": ViewerText("Target prompt", self.target_prompt, disabled=True),
                "edit_region": ViewerText("Edit region", self.region.describe(), disabled=True),
                "edit_before_after": before_after,
                "edit_before_after_status": self._before_after_status,
            }
        self._status = ViewerText(
            "Editing", self.status(), disabled=True, hint="Editing step, steps left, last change."
        )
        return {
            "edit_status": self._status,
            "edit_target_prompt": ViewerText(
                "Target prompt",
                self.target_prompt,
                cb_hook=self._on_prompt,
                hint="Edited-scene prompt; takes effect at the next editing step.",
            ),
            "edit_guidance_scale": ViewerNumber(
                "Guidance scale",
                float(self.guidance.effective_guidance_scale()),
                cb_hook=self._on_scale,
                hint="Classifier-free guidance scale of the editing score.",
            ),
            "edit_fpr": ViewerCheckbox(
                "FPR (identity preservation)",
                self.guidance.fpr.enabled,
                cb_hook=self._on_fpr,
                hint="Fixed-point regularization: on = IDS, off = plain DDS/SDS/CDS/PDS.",
            ),
            "edit_pause": ViewerCheckbox(
                "Pause editing", False, cb_hook=self._on_pause, hint="Stop editing steps; the scene stays viewable."
            ),
            "edit_region_from_crop": ViewerButton("Use the crop box as edit region", cb_hook=self._on_region_from_crop),
            "edit_region_clear": ViewerButton("Edit the whole scene", cb_hook=self._on_region_clear),
            "edit_before_after": before_after,
            "edit_before_after_status": self._before_after_status,
        }

    # ------------------------------------------------------------------ status
    def status(self) -> str:
        """The status line: editing progress, the region, then the last control change if any."""
        parts = [self.progress, self.region.describe(), self.last_change]
        return "; ".join(p for p in parts if p)

    def _show_status(self) -> str:
        text = self.status()
        if self._status is not None:
            self._status.value = text
        return text

    def step_done(self, step: int, total: int) -> str:
        """Update the status line after editing step ``step`` of ``total`` (steps counted from 0); returns it."""
        self.progress = f"step {step + 1} of {total} ({max(0, total - step - 1)} left)"
        return self._show_status()

    def _step(self) -> int:
        return int(getattr(self.trainer, "step", 0) or 0)

    def log_change(self, field: str, value: Any) -> None:
        """Acknowledge a control change: console, tensorboard text, edit_changes.jsonl, status line."""
        from nerfstudio.utils import writer
        from nerfstudio.utils.rich_utils import CONSOLE

        step = self._step()
        self.last_change = f"{field} = {value!r} at step {step}"
        CONSOLE.print(f"[edit control] step {step}: {field} -> {value!r}")
        for event_writer in writer.EVENT_WRITERS:
            tb = getattr(event_writer, "tb_writer", None)
            if tb is not None:
                tb.add_text(f"Edit/{field}", str(value), step)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with (self.run_dir / "edit_changes.jsonl").open("a") as f:
                f.write(json.dumps({"step": step, "field": field, "value": value}) + "\n")
        self._show_status()

    # ------------------------------------------------------------------ callbacks
    def _on_prompt(self, element: ViewerText) -> None:
        if element.value.strip() and element.value != self.target_prompt:
            self.target_prompt = element.value
            self.log_change("target_prompt", element.value)

    def _on_scale(self, element: ViewerNumber) -> None:
        self.guidance.guidance_scale = float(element.value)
        self.log_change("guidance_scale", float(element.value))

    def _on_fpr(self, element: ViewerCheckbox) -> None:
        self.guidance.fpr.enabled = bool(element.value)
        self.log_change("fpr", bool(element.value))

    def _on_pause(self, element: ViewerCheckbox) -> None:
        if self.trainer is not None:
            self.trainer.training_state = "paused" if element.value else "training"
            self.log_change("paused", bool(element.value))

    def _set_region(self, region: RegionConfig, field: str, value: Any) -> None:
        self.region = region
        if self.on_region is not None:
            self.on_region(region)
        self.log_change(field, value)

    def _on_region_from_crop(self, _element: ViewerButton) -> None:
        panel = getattr(getattr(self.trainer, "viewer_state", None), "control_panel", None)
        if panel is None:
            return
        if not panel.crop_viewport:
            self.last_change = 'turn on "Crop Viewport" (General tab) and place the box first'
            self._show_status()
            return
        box = box_of(panel.crop_obb)
        self._set_region(dataclasses.replace(self.region, box=box), "region_box", list(box))

    def _on_region_clear(self, _element: ViewerButton) -> None:
        if self.region.enabled():
            self._set_region(dataclasses.replace(self.region, box=None, masks=None), "region", None)

    def _on_before_after(self, element: ViewerCheckbox) -> None:
        if self.on_before_after is not None:
            message = self.on_before_after(bool(element.value))
            if self._before_after_status is not None:
                self._before_after_status.value = message
