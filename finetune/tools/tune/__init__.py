"""``finetune tune``: hyperparameter search on Optuna within a wall-clock budget
(``study.py``), over a search space in YAML (``space.py``), with the budget's accounting
(``budget.py``), the trials (``trial.py``), what the stored trials say (``history.py``) and the
study's files (``results.py``).

Example:
    >>> import finetune
    >>> report = finetune.tune("resnet50", "photos", budget="30m")  # doctest: +SKIP
    >>> report.best_run_dir  # doctest: +SKIP
"""

from .budget import StudyBudget
from .space import SearchSpace, load_search_space
from .study import TuneReport, tune

__all__ = ["tune", "TuneReport", "SearchSpace", "load_search_space", "StudyBudget"]
