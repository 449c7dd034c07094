"""Filters for the known third-party warnings our commands trigger (and nothing else: our own warnings stay).

nerfstudio 1.1.5 on torch >= 2.4 prints deprecation warnings of torch APIs it uses (``torch.cuda.amp.custom_fwd``,
``torch.jit.script``, ``torch.cuda.amp.GradScaler``), a warning per call site while indexing cameras and logging
scalars, the disabled grad scaler of a CPU run and the data loader's worker count on small machines. They say
nothing a user of ours can act on. :func:`quiet_third_party_warnings` is called by our console scripts before they
import nerfstudio, and by :mod:`ids_nerf.method_configs` when ``ns-*`` commands load the plugin (after nerfstudio's own
imports, so ``ns-train`` still prints the three import-time ones, before any plugin code runs).
"""

from __future__ import annotations

import warnings

#: (category, message regex, module regex) of each filtered warning.
THIRD_PARTY_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (FutureWarning, r"`torch\.cuda\.amp\.custom_(fwd|bwd)\(args\.\.\.\)` is deprecated", r"nerfstudio\."),
    (FutureWarning, r"`torch\.jit\.script` is deprecated", r"torch\.jit\."),
    (UserWarning, r"Using a non-tuple sequence for multidimensional indexing is deprecated", r"nerfstudio\."),
    (UserWarning, r"Converting a tensor with requires_grad=True to a scalar", r"nerfstudio\."),
    (FutureWarning, r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated", r"nerfstudio\."),
    (UserWarning, r"torch\.cuda\.amp\.GradScaler is enabled, but CUDA is not available", r"torch\."),
    (UserWarning, r"This DataLoader will create \d+ worker processes in total", r"torch\.utils\.data\."),
)


def quiet_third_party_warnings() -> None:
    """Ignore :data:`THIRD_PARTY_WARNINGS` in this process (idempotent)."""
    for category, message, module in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
