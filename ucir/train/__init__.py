"""Training: the shared loop and one function per protocol stage."""
from .loop import NonFiniteLoss, Objective, Preempted, fit
from .stages import class_balance_finetune, train_base, train_phase

__all__ = ["NonFiniteLoss", "Objective", "Preempted", "fit", "train_base", "train_phase", "class_balance_finetune"]
