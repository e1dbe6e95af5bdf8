"""A synthetic Oxford-IIIT Pet: real JPEG files and annotation lists in the dataset's exact layout.

Each cat breed is a blob of its own hue on a noisy background; each dog breed a striped pattern, so both
the breed task and cat-vs-other are learnable by a small network in a few epochs. Generated once per spec
into a temporary folder and renamed into place, so a crash never leaves a half-built dataset behind.
"""

import json
import math
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cats_model.data.oxford import CAT, DOG, OxfordPet
from cats_model.errors import UserError

CAT_BREEDS = (
    "Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau",
    "Maine_Coon", "Persian", "Ragdoll", "Russian_Blue", "Siamese", "Sphynx",
)  # fmt: skip
DOG_BREEDS = (
    "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "boxer", "chihuahua",
    "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees", "havanese",
    "japanese_chin", "keeshond", "leonberger", "miniature_pinscher", "newfoundland", "pomeranian", "pug",
    "saint_bernard", "samoyed", "scottish_terrier", "shiba_inu", "staffordshire_bull_terrier",
    "wheaten_terrier", "yorkshire_terrier",
)  # fmt: skip
# Oxford numbers the 37 breeds alphabetically, ignoring case.
CLASS_IDS = {name: i for i, name in enumerate(sorted(CAT_BREEDS + DOG_BREEDS, key=str.lower), start=1)}
MARKER = ".synthetic.json"
HEADER = (
    "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n"
    "#BREED ID: 1-25:Cat 1:12:Dog\n#All images with 1st letter as captial are cat images\n"
    "#images with small first letter are dog images\n"
)


@dataclass  # not frozen: as a config node it must take overrides
class SyntheticSpec:
    """The generator's settings; also the `data.synthetic` config node (registered in cats_model.paths)."""

    trainval_per_class: int = 40
    test_per_class: int = 10
    dog_breeds: int = 3
    min_size: int = 72
    max_size: int = 180
    seed: int = 0


def ensure_synthetic(root: str | Path, spec: SyntheticSpec) -> Path:
    """Generate the dataset at `root` unless the same spec is already there; returns the root.

    Several processes may call this at once on one folder (parallel sweep jobs, containers sharing the data
    volume): each generates the same bytes in a staging folder of its own, the first rename wins, and the others
    drop theirs. A dataset in place is never replaced, since another job may be reading it.
    """
    root = Path(root).expanduser()
    if _holds(root, spec):
        return root
    if root.exists() and any(root.iterdir()):
        raise UserError(
            f"{root} holds something other than a synthetic dataset of this spec (another spec, or other files): "
            "choose another data.root"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        _write_dataset(staging, spec)
        (staging / MARKER).write_text(json.dumps(asdict(spec)))
        staging.rename(root)  # replaces an empty root; fails if another process's dataset is already there
    except OSError:
        if not _holds(root, spec):
            raise  # a concurrent generator that finished first is fine; anything else is not
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _holds(root: Path, spec: SyntheticSpec) -> bool:
    marker = root / MARKER
    return marker.is_file() and json.loads(marker.read_text()) == asdict(spec)


def _write_dataset(root: Path, spec: SyntheticSpec) -> None:
    rng = random.Random(spec.seed)
    dataset = OxfordPet(root)
    dataset.images_dir.mkdir(parents=True)
    dataset.annotations_dir.mkdir()
    breeds = [(name, CAT, i) for i, name in enumerate(CAT_BREEDS, 1)]
    breeds += [(name, DOG, i) for i, name in enumerate(DOG_BREEDS[: spec.dog_breeds], 1)]
    rows = {"trainval": [], "test": []}
    for name, species, breed_id in breeds:
        for n in range(1, spec.trainval_per_class + spec.test_per_class + 1):
            image = f"{name}_{n}"
            _draw(rng, species, breed_id, spec).save(
                dataset.images_dir / f"{image}.jpg", quality=rng.randint(75, 95)
            )
            split = "trainval" if n <= spec.trainval_per_class else "test"
            rows[split].append(f"{image} {CLASS_IDS[name]} {species} {breed_id}\n")
    for split, lines in rows.items():
        (dataset.annotations_dir / f"{split}.txt").write_text("".join(lines))
    (dataset.annotations_dir / "list.txt").write_text(
        HEADER + "".join(sorted(rows["trainval"] + rows["test"]))
    )


def _hsv(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    image = Image.new("HSV", (1, 1), (int(hue * 255) % 256, int(saturation * 255), int(value * 255)))
    return image.convert("RGB").getpixel((0, 0))


def _draw(rng: random.Random, species: int, breed_id: int, spec: SyntheticSpec) -> Image.Image:
    width, height = rng.randint(spec.min_size, spec.max_size), rng.randint(spec.min_size, spec.max_size)
    # Noise from a generator seeded by `rng` (PIL's effect_noise is not reproducible).
    noise = np.random.default_rng(rng.getrandbits(64)).normal(
        rng.randint(60, 200), rng.uniform(5, 15), (height, width, 1)
    )
    image = Image.fromarray(np.repeat(noise.clip(0, 255).astype(np.uint8), 3, axis=2))
    draw = ImageDraw.Draw(image)
    if species == CAT:  # a large blob in the breed's own hue
        colour = _hsv(
            breed_id / len(CAT_BREEDS) + rng.uniform(-0.015, 0.015), rng.uniform(0.75, 1), rng.uniform(0.7, 1)
        )
        rx, ry = width * rng.uniform(0.3, 0.45), height * rng.uniform(0.3, 0.45)
        cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6)
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour)
    else:  # stripes at the breed's own angle, in any hue
        colour = _hsv(rng.random(), rng.uniform(0.5, 1), rng.uniform(0.6, 1))
        angle = math.pi * breed_id / (len(DOG_BREEDS) + 1)
        step = max(width, height) / rng.uniform(5, 8)
        for k in range(-12, 13):
            ox, oy = width / 2 + k * step * math.cos(angle), height / 2 + k * step * math.sin(angle)
            dx, dy = -math.sin(angle) * 2 * max(width, height), math.cos(angle) * 2 * max(width, height)
            draw.line((ox - dx, oy - dy, ox + dx, oy + dy), fill=colour, width=max(2, int(step / 3)))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1)))
