"""The figures of the report, one function per figure of the paper (the code lives in ucir.report.figures)."""
from .figures.ablation import components_bars, lambda_bars, memory_curves
from .figures.common import label, select_runs
from .figures.confusion import confusion_matrices
from .figures.curves import accuracy_curves
from .figures.heads import weight_norms

__all__ = ["accuracy_curves", "components_bars", "confusion_matrices", "label", "lambda_bars", "memory_curves",
           "select_runs", "weight_norms"]
