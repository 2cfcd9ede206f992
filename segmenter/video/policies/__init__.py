"""Memory-selection and mask-selection policies of video tracking, per object and batched.

=============  ==========================================================================
``fifo``       SAM 2: prompted frames + the last ``num_maskmem - 1`` frames; best-IoU mask.
``quality``    Memory frames only where the mask looked right (predicted IoU > 0.5, object
               present); ``t - 1`` always. Helps after occlusions and bad frames.
``samurai``    ``quality`` + a Kalman motion cue in the choice among the 3 candidate masks
               after a stable run (SAMURAI). Helps against look-alikes crossing the target.
``distractor`` Recent memory that skips empty frames on a stride grid + a distractor memory
               filled by introspection (DAM4SAM). Helps with look-alikes near the target
               and long occlusions.
=============  ==========================================================================

Use :func:`make_policy` (a name, a policy, or a name with config overrides) and hand the policy
to :class:`segmenter.video.VideoPredictor` (``memory=``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from segmenter.video.policies.base import Candidates, FifoPolicy, MemoryContext, MemoryPolicy
from segmenter.video.policies.distractor import DistractorConfig, DistractorPolicy
from segmenter.video.policies.quality import QualityConfig, QualityPolicy, SamuraiConfig, SamuraiPolicy

__all__ = [
    "POLICIES",
    "Candidates",
    "DistractorConfig",
    "DistractorPolicy",
    "FifoPolicy",
    "MemoryContext",
    "MemoryPolicy",
    "QualityConfig",
    "QualityPolicy",
    "SamuraiConfig",
    "SamuraiPolicy",
    "make_policy",
]

# name -> (policy class, its config class or None)
POLICIES: dict[str, tuple[type[MemoryPolicy], type | None]] = {
    "fifo": (FifoPolicy, None),
    "quality": (QualityPolicy, QualityConfig),
    "samurai": (SamuraiPolicy, SamuraiConfig),
    "distractor": (DistractorPolicy, DistractorConfig),
}


def make_policy(memory: str | MemoryPolicy | None = "fifo", **options: Any) -> MemoryPolicy:
    """A policy from its name (``options`` set its config fields) or a policy given as is."""
    if isinstance(memory, MemoryPolicy):
        if options:
            raise ValueError("options go with a policy name, not with a policy object")
        return memory
    name = "fifo" if memory is None else memory
    if not isinstance(name, str) or name not in POLICIES:
        raise ValueError(f"unknown memory policy {memory!r}; choose one of: {', '.join(POLICIES)}")
    cls, config_cls = POLICIES[name]
    if config_cls is None:
        if options:
            raise ValueError(f"the {name!r} policy takes no options, got {sorted(options)}")
        return cls()
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for the {name!r} policy; known: {sorted(fields)}")
    return cls(config_cls(**options))  # type: ignore[call-arg]
