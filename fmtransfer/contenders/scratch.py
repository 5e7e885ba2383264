"""The baseline: model B trained from scratch on task B's few images.

Every other contender is paired against it: same split, same seed, same test images.
"""

from __future__ import annotations

from fmtransfer.contenders.base import Contender, ContenderResult, register


@register
class Baseline(Contender):
    name = "baseline"
    title = "baseline"
    description = "Model B from scratch on task B's images: the reference every contender is paired against."
    sections = ("baseline",)
    order = 0

    def fit(self, cfg, split, deps, reporter):
        from fmtransfer import models, runtime, training

        runtime.seed_everything(cfg.seed)
        model = models.build_model_b(cfg.model)
        phase = training.train_from_scratch(model, cfg.baseline, cfg, training.BINARY, split.b_train,
                                            split.b_valid, reporter, "baseline B")
        test = training.evaluate(model, *training.scaled_part(split.b_test), task=training.BINARY)
        return model, ContenderResult(self.name, self.title, test["accuracy"], test["loss"], phases=[phase],
                                      seconds=phase["seconds"])
