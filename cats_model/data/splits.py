"""Deterministic, stratified splits: the same inputs and seed give the same split on every machine."""

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

Sample = tuple[str, int]  # (image path, class index)


@dataclass
class Splits:
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]


def allocate(count: int, fractions: Sequence[float]) -> list[int]:
    """How many of `count` items each part gets; parts after the first get at least one when possible."""
    sizes = [0] * len(fractions)
    for i, fraction in enumerate(fractions[1:], start=1):
        sizes[i] = round(count * fraction)
        if fraction > 0 and sizes[i] == 0 and count >= len(fractions):
            sizes[i] = 1
    sizes[0] = count - sum(sizes)
    if sizes[0] < 0:
        raise ValueError(f"fractions {list(fractions)} leave nothing for the first part of {count} items")
    return sizes


def stratified_split(samples: Sequence[Sample], fractions: Sequence[float], seed: int) -> list[list[Sample]]:
    """Split per class with a shuffle seeded by (seed, class), so adding a class never reshuffles another."""
    by_label: dict[int, list[Sample]] = defaultdict(list)
    for sample in sorted(samples):
        by_label[sample[1]].append(sample)
    parts: list[list[Sample]] = [[] for _ in fractions]
    for label, group in sorted(by_label.items()):
        random.Random(f"{seed}:{label}").shuffle(group)
        start = 0
        for part, size in zip(parts, allocate(len(group), fractions)):
            part.extend(group[start : start + size])
            start += size
    return parts
