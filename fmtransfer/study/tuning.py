"""A tuned study's selection: in each cell and unit (seed, draw), the trial of each contender and
the trial of the baseline that did best on validation data, paired as one run of the cell.

A tuned study (`tune.trials` N) runs N trials of every contender and of the baseline at each
(seed, draw): trial t draws its settings from the search spaces (`RunKey.trial_settings`), and
its results line carries its validation scores beside its test scores. No test score ever
chooses anything: a trial is selected by its validation accuracy, a tie by the lower validation
loss (a diverged trial's, None, is the worst), then by the lower trial index. The selected
contender and the selected baseline of a unit then make the cell's run for that unit, and every
statistic of the report (the paired tests, max-T, TOST, McNemar) reads those runs as it reads an
untuned study's.

A unit is selected only once all N trials of the contender and of the baseline are recorded: a
selection among fewer would be a smaller budget, so an unfinished unit is left out and counted.
The test scores of the trials not selected serve only the budget curves (`study.budget`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from fmtransfer.study.records import RunRecord, Scores

TRIAL = "trial"


def is_tuned(records: Iterable[RunRecord]) -> bool:
    """Whether these records are trials of a tuned study."""
    return any(r.key.values.get(TRIAL) is not None for r in records)


def rank(scores: Scores, trial: int) -> tuple:
    """A trial's place in the selection, higher is better: validation accuracy, then the lower
    validation loss (None, a diverged model's, the worst), then the lower trial index. Never a
    test score."""
    accuracy = scores.details.get("valid_accuracy")
    loss = scores.details.get("valid_loss")
    return (-math.inf if accuracy is None else accuracy, -math.inf if loss is None else -loss, -trial)


def best(trials: dict[int, Scores]) -> int:
    """The selected trial's index among `trials` (index -> scores)."""
    return max(trials, key=lambda t: rank(trials[t], t))


@dataclass
class Selected:
    """The tuned study's runs as a report reads them, one per cell, unit and contender, and how
    each was chosen.

    Args:
        records: the selected contender trial of each (cell, unit, contender), its `baseline`
            the selected baseline trial of that unit (and its predictions file).
        trials: per (setting, contender), per unit (seed, draw): index -> (baseline scores,
            contender scores) of every trial, for the budget curves.
        choices: per (setting, contender), per unit: what was selected (`choice`).
        incomplete: per (setting, contender), the units left out because some trial has not
            finished.
    """

    records: list[RunRecord]
    trials: dict[tuple, dict[tuple, dict[int, tuple[Scores, Scores]]]] = field(default_factory=dict)
    choices: dict[tuple, list[dict[str, Any]]] = field(default_factory=dict)
    incomplete: dict[tuple, int] = field(default_factory=dict)


def select(records: list[RunRecord], trials: int) -> Selected:
    """Each cell's selected runs from a tuned study's `records`, with `trials` trials a unit."""
    by_unit: dict[tuple, dict[str, dict[int, RunRecord]]] = {}
    for r in records:
        t = r.key.values.get(TRIAL)
        if t is None or not 0 <= t < trials:
            continue  # an untuned line, or a trial beyond the budget, never enters a selection
        by_unit.setdefault((r.key.setting, _unit(r)), {}).setdefault(r.contender, {})[t] = r
    chosen, selected = [], Selected([])
    for (setting, unit), by_contender in by_unit.items():
        baselines = {t: r.baseline for runs in by_contender.values() for t, r in runs.items()}
        for name, runs in by_contender.items():
            cell = (setting, name)
            if len(runs) < trials or len(baselines) < trials:
                selected.incomplete[cell] = selected.incomplete.get(cell, 0) + 1
                continue
            t_base = best(baselines)
            t_mine = best({t: r.result for t, r in runs.items()})
            mine = runs[t_mine]
            base_run = next(rs[t_base] for rs in by_contender.values() if t_base in rs)
            predictions = None
            if mine.predictions and base_run.predictions:
                predictions = {"baseline": base_run.predictions["baseline"], "result": mine.predictions["result"]}
            choice = {"seed": unit[0], "data_seed": unit[1], "trial": t_mine, "baseline_trial": t_base,
                      "settings": (mine.drawn or {}).get("result", {}),
                      "baseline_settings": (base_run.drawn or {}).get("baseline", {}),
                      "valid_accuracy": mine.result.details.get("valid_accuracy"),
                      "baseline_valid_accuracy": baselines[t_base].details.get("valid_accuracy"),
                      "steps": mine.result.details.get("steps"),
                      "baseline_steps": baselines[t_base].details.get("steps")}
            chosen.append(replace(mine, baseline=baselines[t_base], predictions=predictions))
            selected.choices.setdefault(cell, []).append(choice)
            selected.trials.setdefault(cell, {})[unit] = {t: (baselines[t], runs[t].result) for t in range(trials)}
    selected.records = chosen
    return selected


def _unit(record: RunRecord) -> tuple:
    values = record.key.values
    return values["seed"], values.get("data_seed", "first")


def summary(selected: Selected, setting: tuple, name: str, tune: dict) -> dict[str, Any]:
    """What a tuned cell reports of its tuning: the budget and protocol, each unit's choice, and
    the SGD steps the selected models used (a pretraining contender's encoder is not counted)."""
    choices = selected.choices.get((setting, name), [])

    def mean(key: str) -> float | None:
        values = [c[key] for c in choices if isinstance(c.get(key), (int, float))]
        return sum(values) / len(values) if values else None

    return {"trials": tune.get("trials"), "on": tune.get("on"), "sampler": tune.get("sampler"),
            "units_incomplete": selected.incomplete.get((setting, name), 0),
            "steps": mean("steps"), "baseline_steps": mean("baseline_steps"),
            "valid_accuracy": mean("valid_accuracy"), "baseline_valid_accuracy": mean("baseline_valid_accuracy"),
            "selected": choices}
