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
        "single_task",
        "shared_bottom",
        "omoe",
        "mmoe",
        "cgc",
        "ple",
        "esmm",
        "cross_stitch",
    ),
    unknown="unknown architecture",
)
register = ARCHITECTURES.register
get = ARCHITECTURES.get
names = ARCHITECTURES.names
