"""The baseline: model B trained from scratch on task B's few images.

Every other contender is paired against it: same split, same seed, same test images.
"""

from __future__ import annotations

from fmtransfer.contenders.base import Contender, ContenderResult, register
from fmtransfer.errors import DivergedError


@register
class Baseline(Contender):
    name = "baseline"
    title = "baseline"
    description = "Model B from scratch on task B's images: the reference every contender is paired against."
    sections = ("baseline",)
    order = 0
    stack_unsupported = None

    def fit(self, cfg, split, deps, reporter):
        (made,) = self.train([cfg], split, [None], reporter)
        if isinstance(made, DivergedError):
            raise made
        return made

    def train(self, cfgs: list, split, bases: list, reporter) -> list:
        """Per config, (model, result) or the DivergedError that stopped it; `bases` are all None:
        a model from scratch builds on nothing. The configs may differ in their seed and in
        `baseline.learning_rate` and `baseline.epochs` (trials, which may share a seed): they
        train as one stack all the same."""
        from fmtransfer import models, training

        made = training.train_from_scratch(cfgs, lambda cfg: models.build_model_b(cfg.model),
                                           [c.baseline for c in cfgs], training.BINARY,
                                           (split.b_train, split.b_valid, split.b_test), reporter, "baseline B")
        return [m if isinstance(m, DivergedError) else
                (m[0], ContenderResult(self.name, self.title, m[2]["accuracy"], m[2]["loss"], phases=[m[1]],
                                       seconds=m[1]["seconds"])) for m in made]
