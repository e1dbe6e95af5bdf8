"""The Oxford-IIIT Pet reader and the datamodules built on it, against hand-written trees in the real layout."""

from pathlib import Path

import pytest
from PIL import Image

from cats_model.cat_or_not import DOG, NEGATIVE
from cats_model.data.datamodule import CatBreedsDataModule, CatVsOtherDataModule, FolderDataModule
from cats_model.data.oxford import OxfordPet, read_annotation_list
from cats_model.data.splits import allocate, stratified_split
from cats_model.data.synthetic import CLASS_IDS, SyntheticSpec, ensure_synthetic
from cats_model.errors import UserError

# Rows as the real files write them: image, class id (1..37), species (1 cat, 2 dog), breed id.
TRAINVAL = """Abyssinian_100 1 1 1
Abyssinian_101 1 1 1
Abyssinian_102 1 1 1
american_bulldog_100 2 2 1
american_bulldog_101 2 2 1
Bengal_1 6 1 2
Bengal_10 6 1 2
Bengal_11 6 1 2
beagle_1 5 2 4
"""
TEST = """Abyssinian_201 1 1 1
Bengal_201 6 1 2
american_bulldog_201 2 2 1
beagle_201 5 2 4
"""
HEADER = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n"


def write_oxford_tree(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    (root / "annotations" / "trainval.txt").write_text(TRAINVAL)
    (root / "annotations" / "test.txt").write_text(TEST)
    (root / "annotations" / "list.txt").write_text(HEADER + TRAINVAL + TEST)
    for line in (TRAINVAL + TEST).splitlines():
        Image.new("RGB", (40, 30), (200, 100, 50)).save(root / "images" / f"{line.split()[0]}.jpg")
    return root


def test_reader_parses_rows_and_skips_comments(tmp_path):
    dataset = OxfordPet(write_oxford_tree(tmp_path / "pets"))
    records = dataset.all_records()
    assert len(records) == 13
    first = records[0]
    assert (first.image, first.class_id, first.species, first.breed_id, first.breed) == (
        "Abyssinian_100", 1, 1, 1, "Abyssinian",
    )  # fmt: skip
    assert [r.breed for r in dataset.split("test")] == ["Abyssinian", "Bengal", "american_bulldog", "beagle"]
    assert dataset.image_path(first) == tmp_path / "pets" / "images" / "Abyssinian_100.jpg"


def test_reader_names_the_bad_line(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(HEADER + "Abyssinian_1 one 1 1\n")
    with pytest.raises(UserError, match=r"list.txt:4"):
        read_annotation_list(path)


def test_cat_breeds_uses_official_split_and_class_ids(tmp_path):
    dm = CatBreedsDataModule(
        str(write_oxford_tree(tmp_path / "pets")), val_fraction=0.34, num_workers=0, dogs=False
    )
    dm.setup()
    assert dm.class_names == ["Abyssinian", "Bengal"] and not dm.has_not_cat  # a breed-only model
    assert sorted(Path(p).stem for p, _ in dm.splits.test) == ["Abyssinian_201", "Bengal_201"]
    trainval = dm.splits.train + dm.splits.val
    assert sorted(Path(p).stem for p, _ in trainval) == sorted(
        line.split()[0] for line in TRAINVAL.splitlines() if line[0].isupper()
    )
    # stratified: each class gives one of its three images to validation
    assert sorted(label for _, label in dm.splits.val) == [0, 1]
    assert {Path(p).stem.rsplit("_", 1)[0]: label for p, label in trainval} == {"Abyssinian": 0, "Bengal": 1}


def test_dogs_and_a_negatives_folder_come_along_as_not_cats(tmp_path):
    root = write_oxford_tree(tmp_path / "pets")
    negatives = tmp_path / "negatives" / "cars"  # any folder of images, nested or not
    negatives.mkdir(parents=True)
    for i in range(10):
        Image.new("RGB", (20, 20), (i, 0, 0)).save(negatives / f"car{i}.png")
    dm = CatBreedsDataModule(str(root), val_fraction=0.34, num_workers=0, negatives=str(negatives.parent))
    dm.setup()
    assert dm.class_names == ["Abyssinian", "Bengal"] and dm.has_not_cat
    names = {part: sorted(Path(p).stem for p, label in getattr(dm.splits, part) if label == DOG)
             for part in ("train", "val", "test")}  # fmt: skip
    assert names["test"] == ["american_bulldog_201", "beagle_201"]  # the official split, as for the cats
    assert sorted(names["train"] + names["val"]) == [
        "american_bulldog_100",
        "american_bulldog_101",
        "beagle_1",
    ]
    # the negatives in the cats' proportions: 2 of the 8 cats are in the official test split, 34% of the rest in val
    sizes = [
        sum(label == NEGATIVE for _, label in getattr(dm.splits, part)) for part in ("train", "val", "test")
    ]
    assert sizes == [5, 3, 2]
    with pytest.raises(UserError, match=r"^data.negatives=.*nowhere: no such folder"):
        CatBreedsDataModule(str(root), num_workers=0, negatives=str(tmp_path / "nowhere")).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"^data.negatives=.*empty holds no images"):
        CatBreedsDataModule(str(root), num_workers=0, negatives=str(tmp_path / "empty")).setup()


def test_cat_vs_other_balances_dogs_deterministically(tmp_path):
    root = write_oxford_tree(tmp_path / "pets")
    dm = CatVsOtherDataModule(str(root), val_fraction=0.2, num_workers=0, other_per_cat=0.5)
    dm.setup()
    assert dm.class_names == ["cat", "other"]
    trainval = dm.splits.train + dm.splits.val
    assert sum(1 for _, label in trainval if label == 0) == 6
    assert sum(1 for _, label in trainval if label == 1) == 3  # round(6 * 0.5) of the 3 dogs
    again = CatVsOtherDataModule(str(root), val_fraction=0.2, num_workers=0, other_per_cat=0.5)
    again.setup()
    assert (again.splits.train, again.splits.val, again.splits.test) == (
        dm.splits.train,
        dm.splits.val,
        dm.splits.test,
    )


def test_missing_dataset_names_the_download_command(tmp_path):
    dm = CatBreedsDataModule(str(tmp_path / "nowhere"), num_workers=0)
    with pytest.raises(UserError, match=r"bash data/download.sh --root .*nowhere.*data=synthetic"):
        dm.prepare_data()


def test_folder_datamodule_splits_every_class(tmp_path):
    for name in ("tabby", "tuxedo", "ginger"):
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.new("RGB", (8, 8)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "empty").mkdir()
    dm = FolderDataModule(str(tmp_path), val_fraction=0.2, test_fraction=0.2, num_workers=0)
    dm.setup()
    assert dm.class_names == ["ginger", "tabby", "tuxedo"]
    assert [len(s) for s in (dm.splits.train, dm.splits.val, dm.splits.test)] == [18, 6, 6]
    assert sorted({label for _, label in dm.splits.test}) == [0, 1, 2]


def test_stratified_split_is_deterministic_and_disjoint():
    samples = [(f"img{i}", i % 3) for i in range(30)]
    first = stratified_split(samples, (0.8, 0.2), seed=7)
    assert first == stratified_split(list(reversed(samples)), (0.8, 0.2), seed=7)
    assert first != stratified_split(samples, (0.8, 0.2), seed=8)
    assert sorted(first[0] + first[1]) == sorted(samples)
    assert allocate(2, (0.9, 0.1)) == [1, 1] and allocate(1, (0.9, 0.1)) == [1, 0]


def test_synthetic_dataset_has_the_real_layout_and_is_cached(tmp_path):
    spec = SyntheticSpec(trainval_per_class=3, test_per_class=1, dog_breeds=2, seed=3)
    root = ensure_synthetic(tmp_path / "syn", spec)
    dataset = OxfordPet(root)
    assert dataset.exists()
    trainval, test = dataset.split("trainval"), dataset.split("test")
    assert len(trainval) == 14 * 3 and len(test) == 14
    for record in trainval + test:
        assert CLASS_IDS[record.breed] == record.class_id
        with Image.open(dataset.image_path(record)) as image:
            assert image.format == "JPEG"
    sizes = {Image.open(dataset.image_path(r)).size for r in trainval}
    assert len(sizes) > 10  # varied sizes and aspect ratios
    stamp = dataset.image_path(trainval[0]).stat().st_mtime_ns
    ensure_synthetic(root, spec)  # same spec: nothing is rewritten
    assert dataset.image_path(trainval[0]).stat().st_mtime_ns == stamp
    other = tmp_path / "other"
    ensure_synthetic(other, spec)
    assert (other / "images" / "Abyssinian_1.jpg").read_bytes() == (
        root / "images" / "Abyssinian_1.jpg"
    ).read_bytes()


def test_synthetic_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(UserError, match="other than a synthetic dataset"):
        ensure_synthetic(tmp_path, SyntheticSpec(trainval_per_class=1, test_per_class=1))
    assert (tmp_path / "mine.txt").read_text() == "precious"
