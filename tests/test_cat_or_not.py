"""The cat-or-not threshold and report (cats_model.cat_or_not) on numbers small enough to check by hand; the bench
that trains a model with and without the cat-or-not head side by side."""

import json

import pytest
import torch

from cats_model.cat_or_not import DOG, NEGATIVE, choose_threshold, report, verdict


def test_the_threshold_keeps_all_but_the_allowed_cats_with_the_widest_margin():
    cats = torch.arange(100, dtype=torch.float) / 10  # cat logits 0.0 .. 9.9
    dogs = torch.tensor([-5.0, -3.0, 0.05, 0.5])
    logits = torch.cat([cats, dogs])
    labels = torch.tensor([0] * 100 + [DOG] * 4)
    threshold = choose_threshold(logits, labels, max_false_reject=0.02)
    # 2 of 100 cats may be rejected: the third lowest (0.2) must stay; the likeliest dog under it is 0.05
    assert threshold == pytest.approx(torch.sigmoid(torch.tensor(0.125)).item())
    figures = report(logits.sigmoid(), labels, threshold)
    assert (
        figures["cat_recall"] == pytest.approx(0.98) and figures["dog_rejection"] == 0.75
    )  # 0.5: above a kept cat
    assert 0.9 < figures["cat_auroc"] < 1
    # no not-cat below: the threshold sits on the cat it must keep; none allowed: on the lowest cat
    assert choose_threshold(cats, torch.zeros(100, dtype=torch.long), 0.02) == pytest.approx(
        torch.sigmoid(torch.tensor(0.2)).item()
    )
    assert choose_threshold(logits, labels, 0.0) == pytest.approx(torch.sigmoid(torch.tensor(-1.5)).item())


def test_the_report_names_each_kind_of_not_cat_it_saw():
    scores = torch.tensor([0.9, 0.6, 0.1, 0.7, 0.2, 0.3])
    labels = torch.tensor([0, 1, DOG, DOG, NEGATIVE, NEGATIVE])
    assert report(scores, labels, 0.5) == pytest.approx(
        {"cat_recall": 1.0, "dog_rejection": 0.5, "negative_rejection": 1.0, "cat_auroc": 7 / 8}
    )
    assert set(report(scores[:2], labels[:2], 0.5)) == {"cat_recall"}  # no not-cats: no rejection, no AUROC
    assert verdict(0.03, 0.6) == {"is_cat": False, "cat_probability": 0.03}
    assert verdict(0.6, 0.6)["is_cat"]


@pytest.mark.slow
def test_the_cat_head_bench_trains_both_models_side_by_side(tmp_path, capsys):
    from helpers import FAST

    from cats_model.bench.cli import main

    out = tmp_path / "bench-cat-head.json"
    results = main(["cat-head", *FAST, "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    both, breeds = results["runs"]["breeds + cat-or-not"], results["runs"]["breeds only"]
    assert {"test/cat_recall", "test/dog_rejection", "test/cat_auroc", "cat_threshold"} <= set(both)
    assert not any("cat" in key for key in breeds)  # data.dogs=false: a breed-only model
    assert both["epoch"] == breeds["epoch"] == 1  # trained the same way
    assert results["breed_accuracy_difference"] == both["test/acc"] - breeds["test/acc"]
    table = capsys.readouterr().out
    assert "| breeds only |" in table and "breed accuracy with the cat-or-not head minus without: " in table


@pytest.mark.slow
def test_a_negatives_folder_trains_the_cat_head_and_is_reported(tmp_path):
    from helpers import FAST, fast_without
    from PIL import Image

    from cats_model.config import compose_train_config
    from cats_model.errors import UserError
    from cats_model.train import train

    negatives = tmp_path / "no cats"
    negatives.mkdir()
    for i in range(20):  # grey squares: nothing like a cat
        Image.new("RGB", (48, 48), (10 * i, 10 * i, 10 * i)).save(negatives / f"{i}.jpg")
    overrides = [
        *fast_without("data.synthetic.dog_breeds"),
        "data.synthetic.dog_breeds=0",
        f"data.negatives={negatives}",
    ]
    metrics = train(compose_train_config(overrides, tmp_path / "run"))
    assert len(metrics["classes"]) == 12  # still the breeds; the negatives are no class
    assert 0 <= metrics["test/negative_rejection"] <= 1 and "test/dog_rejection" not in metrics
    assert 0 <= metrics["cat_threshold"] <= 1
    with pytest.raises(UserError, match=r"^data.negatives=\S+/nowhere: no such folder"):
        train(compose_train_config([*FAST, f"data.negatives={tmp_path / 'nowhere'}"], tmp_path / "other"))
