"""Viewer controls of an edit: target prompt, guidance scale, FPR on/off, pause editing.

nerfstudio's viewer discovers ``ViewerElement`` attributes of the pipeline; their callbacks change the live guidance
config (the ScoreDistiller reads it every step) or the trainer's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nerfstudio.viewer.viewer_elements import ViewerCheckbox, ViewerElement, ViewerNumber, ViewerText

if TYPE_CHECKING:
    from ids_nerf.nerf.pipeline import NerfGuidanceConfig


class EditControls:
    """State shared between the viewer thread and the editing loop."""

    def __init__(self, guidance: NerfGuidanceConfig) -> None:
        self.guidance = guidance
        self.target_prompt = guidance.trg_prompt
        self.trainer: Any = None

    def attach_trainer(self, trainer: Any) -> None:
        """Let the pause checkbox pause the trainer's loop."""
        self.trainer = trainer

    def elements(self) -> dict[str, ViewerElement]:
        """Viewer elements to set as pipeline attributes (the attribute names are their tree paths)."""
        return {
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
        }

    def _on_prompt(self, element: ViewerText) -> None:
        if element.value.strip():
            self.target_prompt = element.value

    def _on_scale(self, element: ViewerNumber) -> None:
        self.guidance.guidance_scale = float(element.value)

    def _on_fpr(self, element: ViewerCheckbox) -> None:
        self.guidance.fpr.enabled = bool(element.value)

    def _on_pause(self, element: ViewerCheckbox) -> None:
        if self.trainer is not None:
            self.trainer.training_state = "paused" if element.value else "training"
