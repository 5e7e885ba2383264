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

from fmtransfer import contenders, sampler
from fmtransfer.study import budget
from fmtransfer.study.records import BASELINE_TRIAL, RunRecord, Scores

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
            chosen.append(replace(mine, baseline=baselines[t_base], predictions=predictions,
                                  extra={**mine.extra, BASELINE_TRIAL: t_base}))
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
            "selected": choices,
            # Dodge's curves need independent trials: TPE's depend on those before them.
            "budget": curves(selected, setting, name) if tune.get("sampler", "random") == "random" else None}


def curves(selected: Selected, setting: tuple, name: str) -> dict[str, Any] | None:
    """The cell's budget curves (`study.budget`), n = 1..N: the contender's and the baseline's
    expected best validation accuracy and expected test accuracy of the validation-selected
    trial, averaged over the units, and the tuned gain against n with where its sign changes."""
    per_unit = selected.trials.get((setting, name), {})
    if not per_unit:
        return None
    mine, theirs = [], []
    for trials in per_unit.values():
        order = sorted(trials)
        for side, made in ((1, mine), (0, theirs)):
            scores = [trials[t][side] for t in order]
            made.append(budget.curve([s.details.get("valid_accuracy", 0.0) for s in scores],
                                     [s.details.get("valid_loss") for s in scores], order,
                                     [s.test_accuracy for s in scores]))
    return {"contender": budget.cell_curve(mine).to_dict(), "baseline": budget.cell_curve(theirs).to_dict(),
            "gain": budget.tuned_gain(mine, theirs).to_dict()}


# ----------------------------------------------------------------------------- the trials' settings

class Draws:
    """What each trial of a study's runner is given to train with, {"baseline": {key: value},
    "result": {...}} as its results line records it (`drawn`).

    Random search (`tune.sampler` random): each trial's own draw (`RunKey.trial_settings`), a pure
    function of its coordinates. TPE: Optuna's suggestion (`fmtransfer.sampler.suggest`) from
    the (settings, validation accuracy) of the trials before it at the same point, for the
    baseline (one stream per seed, pair, size and draw: one baseline serves every cell there) and
    for each contender (one per cell), read from the study's records at first need and kept as
    this runner adds its own; so a unit's trials run in order, and a resumed study suggests what
    an uninterrupted one would. Each trial is also written to the shard's journal for
    optuna-dashboard (`sampler.journal_path`).
    """

    def __init__(self, cfg, records: Iterable[RunRecord] = (), journal=None):
        self.cfg, self.journal = cfg, journal
        self.history: dict[tuple, dict[int, tuple[dict, float | None]]] = {}
        for r in records:
            if r.key.values.get(TRIAL) is not None and r.drawn:
                self.add(r.key, "baseline", r.drawn.get("baseline", {}), r.baseline)
                self.add(r.key, r.contender, r.drawn.get("result", {}), r.result)

    def _stream(self, key, name: str) -> tuple:
        return (key.seed, key.stream("baseline" if name == "baseline" else "contender"), name)

    def add(self, key, name: str, settings: dict, scores) -> None:
        """Trial `key.trial` of `name` at `key`'s point trained with `settings` and scored `scores`."""
        details = scores.details if isinstance(scores, Scores) else scores
        value = None if "diverged" in details else details.get("valid_accuracy")
        self.history.setdefault(self._stream(key, name), {})[key.trial] = (dict(settings), value)
        if self.journal is not None and self.cfg.tune.sampler == "tpe":
            sampler.record(self.journal, "/".join(map(str, self._stream(key, name))), self._space(key, name),
                           settings, value, number=key.trial)

    def _space(self, key, name: str) -> dict:
        """What `name`'s trial at `key` draws: its spaces at this point (a depth capped by the
        point's reuse depth), less the baseline's, which the baseline's trial draws."""
        cfg = key.axes_config(self.cfg)
        baseline = contenders.get("baseline").space(cfg)
        return baseline if name == "baseline" else {
            k: s for k, s in contenders.get(name).space(cfg).items() if k not in baseline}

    def _suggested(self, key, name: str) -> dict:
        stream = self._stream(key, name)
        past = self.history.get(stream, {})
        if any(t not in past for t in range(key.trial)):
            missing = min(t for t in range(key.trial) if t not in past)
            raise RuntimeError(f"TPE's trial {key.trial} of {name} at {key.id} needs trial {missing} first")
        return sampler.suggest(self._space(key, name), [past[t] for t in range(key.trial)],
                               seed=sampler.sampler_seed(key.seed, stream[1], name, key.trial))

    def drawn(self, key, name: str) -> dict | None:
        """What `name`'s run at `key` trains with (None untuned); "baseline" names the baseline's."""
        if key.values.get(TRIAL) is None:
            return None
        if self.cfg.tune.sampler == "random":
            both = key.trial_settings(key.axes_config(self.cfg), name)
            mine = set(self._space(key, name)) if name != "baseline" else set()
            return {"baseline": {k: v for k, v in both.items() if k not in mine},
                    "result": {k: v for k, v in both.items() if k in mine}}
        base = self._suggested(key, "baseline")
        return {"baseline": base, "result": {} if name == "baseline" else self._suggested(key, name)}


# ----------------------------------------------------------------------------- said in a report

def words(cell: dict, where: str) -> list[str]:
    """A tuned cell (`Cell.to_dict()`) in sentences: how it was tuned and selected, the steps its
    selected models used, and its tuned gain against the budget, with where the curves cross."""
    t = cell.get("tuning")
    if not t:
        return []
    on = "task B's validation images" if t["on"] == "valid" else f"{t['on'].partition(':')[2]}-fold cross-validation " \
                                                                 "inside the labelled sample"
    said = (f"{cell['title']}, {where}: tuned with {t['trials']} trials a unit ({t['sampler']} search), each unit's "
            f"trial selected on {on}")
    if t.get("steps") is not None and t.get("baseline_steps") is not None:
        said += f"; its selected models took {t['steps']:.0f} SGD steps on task B, the baseline's {t['baseline_steps']:.0f}"
    if t.get("units_incomplete"):
        said += f"; {t['units_incomplete']} unit(s) left out, their trials unfinished"
    gain = (t.get("budget") or {}).get("gain")
    if gain:
        n, mean = gain["n"], gain["mean"]
        shown = sorted({0, len(n) // 4, len(n) // 2, len(n) - 1})
        said += "; expected tuned gain " + ", ".join(f"{100 * mean[i]:+.2f} pts at n={n[i]}" for i in shown)
        if gain["crossings"]:
            said += (f"; the curves cross at n={', '.join(map(str, gain['crossings']))}, so which is better "
                     "depends on the budget")
    return [said + "."]


def budget_figures(cells: list, label) -> list[tuple[str, Any]]:
    """(file name, figure) per setting of tuned cells with budget curves: each contender's and
    the baseline's expected best validation and expected test of the selected trial against n.
    `label(cell)`: the setting in words, for the title and the file name."""
    by_setting: dict[tuple, dict[str, budget.Curve]] = {}
    names: dict[tuple, tuple[str, str]] = {}
    for c in cells:
        b = (c.tuning or {}).get("budget")
        if not b:
            continue
        title, stem = label(c)
        curves = by_setting.setdefault(c.setting, {})
        curves.setdefault("baseline", budget.Curve(**{k: _tuple(v) for k, v in b["baseline"].items()}))
        curves[c.title] = budget.Curve(**{k: _tuple(v) for k, v in b["contender"].items()})
        names[c.setting] = (title, stem)
    return [(f"budget-{names[s][1]}.png", budget.budget_figure(curves, f"Budget curves: {names[s][0]}"))
            for s, curves in by_setting.items()]


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v
