"""Greedy soup (Wortsman et al., ICML 2022): the weights of several fine-tuned models of transfer
from A averaged, each added only where the average does not lose validation accuracy.

The ingredients share their start, model A and the seed's new head, and differ in the
randomness of their fine-tuning run: here the shuffles of B's training images (ingredient 0
draws the seed's own, so it is transfer from A itself; ingredient j > 0 draws shuffles of its
own, `TransferFromA.train`'s `shuffles`). They train as one stack on the dense network, one by
one on the cnn. The paper's recipe then: sort them by accuracy on task B's validation images,
start from the best, and add each next one to the average if the averaged model's validation
accuracy does not drop (>=); the soup is the plain mean of the ones kept. A soup of one
ingredient is the transfer model itself.

The paper soups the models of a hyperparameter sweep. A tuned study keeps no trial's model, so
here trial t of the soup makes its K ingredients with trial t's drawn [transfer] settings: the
soup is tuned like any contender, on transfer's space, with K fine-tunings per trial.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from fmtransfer.config import MAX_STACK, Bounds, Section, setting
from fmtransfer.contenders.base import Contender, register
from fmtransfer.contenders.transfer import TransferFromA
from fmtransfer.errors import ConfigError, DivergedError
from fmtransfer.needs import MODEL_A

ONE = "one ingredient: the transfer model itself"


@register
class Soup(Contender):
    name = "soup"
    title = "greedy soup"
    description = ("Transfer from A fine-tuned K times on other shuffles of B's images, the weights averaged "
                   "greedily in order of validation accuracy, each kept if it does not lower it "
                   "(Wortsman et al. 2022).")
    needs = (MODEL_A,)
    sections = ("transfer",)
    artifact = "soup"
    order = 58
    stack_unsupported = ("each seed's K ingredients already train as one stack of their own, where a study's stack "
                         "holds one slot per seed")

    @dataclass(frozen=True)
    class Settings(Section):
        """Greedy soup (Wortsman et al., ICML 2022): how many fine-tuned models of transfer from A it averages."""

        NAME = "soup"
        # A budget, not a setting to tune: each ingredient is a whole fine-tuning, and more can only
        # give the greedy rule more to choose from. 8 is within the paper's range of soups
        # (its sweeps hold from a handful of models to 72), at 8 times transfer's cost.
        ingredients: int = setting(8, "How many fine-tunings of transfer from A (each on its own shuffles of B's "
                                      "images) the soup chooses from; 1 is transfer from A itself.",
                                   bounds=Bounds(1, MAX_STACK, why=" fine-tuned models"))

    def check_settings(self, cfg):
        _check_validation(cfg.soup.ingredients, cfg.data.valid_size)

    def fit(self, cfg, split, deps, reporter, source: str | None = None):
        """Its K ingredients on `deps[needs[0]]` (`source` names it, as for transfer), then the soup."""
        from fmtransfer import models, training

        started = time.perf_counter()
        count = cfg.soup.ingredients
        valid = split.b_valid
        _check_validation(count, len(valid[1]))  # a split made elsewhere may hold none of task B's
        base = deps[self.needs[0]]
        maker = TransferFromA()
        maker.title = self.title  # what its progress bars and a divergence call the phases
        made = maker.train([cfg] * count, split, [base] * count, reporter, source, shuffles=list(range(count)))
        if count == 1:  # transfer from A itself, which raised if it diverged
            model, result = made[0]
            return model, dataclasses.replace(result, name=self.name, title=self.title,
                                              details={**result.details, "soup": ONE, "ingredients": 1})
        scores: list[float | None] = []  # None: diverged, in training or in its predictions
        failures = []
        for outcome in made:
            scored = outcome if isinstance(outcome, DivergedError) else training.evaluated(outcome[0], valid,
                                                                                            training.BINARY)
            failures += [scored] if isinstance(scored, DivergedError) else []
            scores.append(None if isinstance(scored, DivergedError) else scored["accuracy"])
        grown = [j for j, s in enumerate(scores) if s is not None]
        if not grown:
            raise failures[0]
        weights = {j: made[j][0].get_weights() for j in grown}
        soup = models.clone_with_weights(made[grown[0]][0])

        def accuracy(kept: list[int]) -> float:
            soup.set_weights(average([weights[j] for j in kept]))
            scored = training.evaluated(soup, valid, training.BINARY)
            return -1.0 if isinstance(scored, DivergedError) else scored["accuracy"]  # never kept

        tried, kept, soup_accuracy = greedy({j: scores[j] for j in grown}, accuracy)
        soup.set_weights(average([weights[j] for j in kept]))
        test = training.evaluated(soup, split.b_test, training.BINARY)
        if isinstance(test, DivergedError):
            raise test
        first = made[grown[0]][1]
        # Every ingredient's epochs, as trained: what the soup cost, which a tuned study counts in steps.
        phases = [{**p, "name": f"ingredient {j}: {p['name']}"} for j in grown for p in made[j][1].phases]
        details = {**first.details, "soup": f"greedy: {len(kept)} of {count} ingredients", "ingredients": count,
                   "tried": tried, "kept": kept, "ingredient_valid_accuracy": scores,
                   "soup_valid_accuracy": soup_accuracy}
        diverged = [j for j, s in enumerate(scores) if s is None]
        if diverged:
            details["diverged"] = diverged
        return soup, dataclasses.replace(first, name=self.name, title=self.title, test_accuracy=test["accuracy"],
                                         test_loss=test["loss"], phases=phases, details=details,
                                         seconds=round(time.perf_counter() - started, 3))


def greedy(scores: dict[int, float], accuracy: Callable[[list[int]], float]) -> tuple[list[int], list[int], float]:
    """The paper's greedy soup: (ingredients in the order tried, those kept in the order added,
    the soup's validation accuracy), given each ingredient's validation accuracy (`scores`) and
    `accuracy(kept)`, that of the average of the ingredients `kept`.

    The best first (ties by index); each next one joins if the average with it scores at least
    the soup without it.

    Example:
        >>> greedy({0: 0.8, 1: 0.9, 2: 0.85}, lambda kept: {(1, 2): 0.88, (1, 0): 0.91}[tuple(kept)])
        ([1, 2, 0], [1, 0], 0.91)
    """
    tried = sorted(scores, key=lambda j: (-scores[j], j))
    kept, best = [tried[0]], scores[tried[0]]
    for j in tried[1:]:
        found = accuracy([*kept, j])
        if found >= best:
            kept, best = [*kept, j], found
    return tried, kept, best


def average(ingredients: Sequence[list[np.ndarray]]) -> list[np.ndarray]:
    """The plain mean of the ingredients' weights, weight by weight, summed in float64 (the mean
    of one ingredient is its weights, to the bit)."""
    return [(sum(np.asarray(w, dtype=np.float64) for w in same) / len(ingredients)).astype(np.asarray(same[0]).dtype)
            for same in zip(*ingredients)]


def _check_validation(count: int, images: int) -> None:
    if count > 1 and images == 0:
        raise ConfigError("data.valid_size", f"leaves no validation images of task B, which a soup of {count} "
                                             "ingredients ranks and keeps them by; hold some out, or make "
                                             "soup.ingredients 1")
