"""Class orders (Sec. 4.1: "the classes are arranged in a fixed random order")."""
from __future__ import annotations

import numpy as np

OFFICIAL_SEED = 1993


def class_order(num_classes: int, seed: int = OFFICIAL_SEED) -> list[int]:
    """The official code's order: np.random.seed(seed); np.random.shuffle(np.arange(num_classes)).

    With num_classes=100 and seed=1993 this starts 68, 56, 78, 8, 23 (the order of the paper's CIFAR-100 runs).
    The legacy global RNG is used on purpose (it is what the official code seeds); its state is restored after.
    """
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        order = np.arange(num_classes)
        np.random.shuffle(order)
    finally:
        np.random.set_state(state)
    return [int(c) for c in order]


def positions(order: list[int]) -> np.ndarray:
    """Inverse of an order: positions(order)[original_class] = position of that class in the order."""
    inv = np.empty(len(order), dtype=np.int64)
    inv[np.asarray(order)] = np.arange(len(order))
    return inv
