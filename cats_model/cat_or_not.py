"""The cat-or-not answer, in one place: the labels of the not-cat images, the threshold, the report, the verdict.

Breeds are labelled 0..C-1; the images that show no cat carry a negative label saying where they came from, so
that the breed head learns from cats alone and the report can say how often each kind of not-cat is rejected.
The cat head gives one logit; P(cat) is its sigmoid, and a photo is a cat when P(cat) >= the model's threshold.
"""

import math

import torch
from torchmetrics.functional.classification import binary_auroc

DOG, NEGATIVE = -1, -2  # dogs of the dataset, images of `data.negatives`
NOT_CAT_KINDS = {DOG: "dog", NEGATIVE: "negative"}
DEFAULT_THRESHOLD = 0.5  # until a validation has chosen one


def is_cat(labels: torch.Tensor) -> torch.Tensor:
    return labels >= 0


def choose_threshold(logits: torch.Tensor, labels: torch.Tensor, max_false_reject: float) -> float:
    """The threshold on P(cat) for validation's cat logits and labels: it rejects at most `max_false_reject` of
    the cats, and as many not-cats as that allows. Of the thresholds that do both, the one mid-way (in logits)
    between the cat it must keep and the likeliest not-cat it rejects: the widest margin on either side."""
    cats = logits[is_cat(labels)].double().sort().values
    if len(cats) == 0:
        return DEFAULT_THRESHOLD
    highest = cats[min(math.floor(max_false_reject * len(cats)), len(cats) - 1)]  # rejects few enough cats
    below = logits[~is_cat(labels)].double()
    below = below[below < highest]
    middle = highest if len(below) == 0 else (highest + below.max()) / 2
    return float(torch.sigmoid(middle))


def report(scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> dict[str, float]:
    """Cat recall, the rejection rate of each kind of not-cat present, and the AUROC of P(cat)."""
    cats, accepted = is_cat(labels), scores >= threshold
    result = {}
    if cats.any():
        result["cat_recall"] = accepted[cats].float().mean().item()
    for label, kind in NOT_CAT_KINDS.items():
        mask = labels == label
        if mask.any():
            result[f"{kind}_rejection"] = (~accepted[mask]).float().mean().item()
    if cats.any() and (~cats).any():
        result["cat_auroc"] = binary_auroc(scores.float(), cats.long()).item()
    return result


def verdict(cat_probability: float, threshold: float) -> dict:
    """What predict and /predict add to a row: the answer and the probability it rests on."""
    return {"is_cat": bool(cat_probability >= threshold), "cat_probability": float(cat_probability)}
