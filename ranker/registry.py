"""One registry of architectures by name: `@register("mmoe")` on a Backbone subclass."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ranker.named import NamedClasses

if TYPE_CHECKING:
    from ranker.architectures.base import Backbone

# The modules that hold the registered architectures, imported on first lookup.
ARCHITECTURES: NamedClasses[type[Backbone]] = NamedClasses(
    "architecture",
    "ranker.architectures",
    (
        # one network per task, then hard sharing
        "single_task",
        "shared_bottom",
        # soft sharing: per-task columns, tied or mixed
        "soft_sharing",
        "cross_stitch",
        "nddr",
        "mtan",
        "mrn",
        "adashare",
        # mixtures of experts
        "omoe",
        "mmoe",
        "dselect_k",
        "cgc",
        "ple",
        "home",
        "adatt",
        "stem",
        # conditioned tasks in the entire space
        "esmm",
        "escm2",
        "aitm",
    ),
    unknown="unknown architecture",
)
register = ARCHITECTURES.register
get = ARCHITECTURES.get
names = ARCHITECTURES.names
