"""An fmtransfer contender from outside the project: the book's two phases on model A, with both
learning rates multiplied by `example.scale`.

It is the whole plug-in: a subclass of `TransferFromA` that overrides one hook (`phases`), its
settings section (`Settings`, which becomes `[example]` in TOML and `--example-scale` on the
command line), and, in pyproject.toml, the entry point that names the class. It needs no
`@register`: fmtransfer registers what the entry point names the first time it lists contenders.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fmtransfer.config import RATE, Section, setting
from fmtransfer.contenders.transfer import TransferFromA


class Example(TransferFromA):
    name = "example"  # the entry point's name too: `--contenders example`
    title = "example (scaled rates)"
    description = "The book's two phases on model A, both learning rates multiplied by example.scale."

    @dataclass(frozen=True)
    class Settings(Section):
        """[example]: how much faster (above 1) or slower than the book both phases learn."""

        NAME = "example"
        scale: float = setting(1.0, "Multiplies both transfer learning rates (frozen and fine-tune phases).",
                               bounds=RATE)  # positive and finite: `--example-scale 0` is refused

    def phases(self, cfg, reused):
        """The book's phases, each at `scale` times its rate; a divergence names example.scale."""
        scale = cfg.example.scale
        return [dataclasses.replace(phase, learning_rate=phase.learning_rate * scale, key="example.scale")
                for phase in super().phases(cfg, reused)]
