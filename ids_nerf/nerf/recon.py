"""The trainer of the reconstruction warm-ups (``ids-recon``: nerfacto, ``ids-splat-recon``: splatfacto).

nerfstudio's own Trainer and TrainerConfig, with the plugin's checks and interruption handling:

- the scene data is checked before anything is written or printed
  (:class:`~ids_nerf.nerf.dataparsers.validate.DataCheckedTrainerConfig`): bad data is one paragraph naming the flag
  and the file, exit code 2, no run folder, no config dump before it;
- Ctrl-C / SIGTERM (:class:`~ids_nerf.nerf.interrupts.InterruptibleTraining`): a checkpoint of the last whole step,
  one line with the command that continues the reconstruction, exit code 130 / 143.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nerfstudio.engine.trainer import Trainer

from ids_nerf.nerf.dataparsers.validate import DataCheckedTrainerConfig, check_trainer_data
from ids_nerf.nerf.interrupts import InterruptibleTraining


class ReconTrainer(InterruptibleTraining, Trainer):
    """nerfstudio's Trainer; interruptions end with a checkpoint and the command that continues the run."""


@dataclass
class ReconTrainerConfig(DataCheckedTrainerConfig):
    """A reconstruction warm-up run (nerfstudio's TrainerConfig, data checked first)."""

    _target: type = field(default_factory=lambda: ReconTrainer)

    def print_to_terminal(self) -> None:
        """ns-train prints the whole config before it saves it: check the data first, so that bad data ends with
        its one-paragraph error alone."""
        from ids_nerf.console import exit_on_user_error

        with exit_on_user_error(f"ns-train {self.method_name}"):
            check_trainer_data(self)
        super().print_to_terminal()
