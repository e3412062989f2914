"""The figures of the report, one function per figure of the paper (the code lives in ucir.report.figures)."""
from .figures.ablation import plot_components, plot_adaptive_weight, plot_memory
from .figures.common import label, select_runs
from .figures.confusion import plot_confusion
from .figures.accuracy import plot_accuracy
from .figures.weight_norms import plot_weight_norms

__all__ = ["plot_accuracy", "plot_components", "plot_confusion", "label", "plot_adaptive_weight", "plot_memory",
           "select_runs", "plot_weight_norms"]

# The figures an experiment's `plot:` names, by name: what plot_experiment.py draws for each rule plot_<name>.
EXPERIMENT_PLOTTERS = {"accuracy": plot_accuracy, "components": plot_components, "memory": plot_memory,
                       "adaptive_weight": plot_adaptive_weight}
