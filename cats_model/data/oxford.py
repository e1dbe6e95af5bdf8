"""Reader for the Oxford-IIIT Pet layout: images/<Name>_<n>.jpg plus annotations/{list,trainval,test}.txt.

Annotation rows read `<image> <class id 1..37> <species 1=cat 2=dog> <breed id>`; lines starting with '#'
are comments. The breed name is the image name without its trailing `_<n>` (the dataset's own convention).
"""

from dataclasses import dataclass
from pathlib import Path

from cats_model.errors import UserError

CAT, DOG = 1, 2
SPLITS = ("trainval", "test")


@dataclass(frozen=True)
class PetRecord:
    image: str
    class_id: int
    species: int
    breed_id: int

    @property
    def breed(self) -> str:
        return self.image.rsplit("_", 1)[0]


def read_annotation_list(path: Path) -> list[PetRecord]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            records.append(PetRecord(fields[0], int(fields[1]), int(fields[2]), int(fields[3])))
        except (IndexError, ValueError):
            raise UserError(
                f"{path}:{number}: expected '<image> <class id> <species> <breed id>', got {line!r}"
            ) from None
    return records


class OxfordPet:
    """One Oxford-IIIT Pet tree on disk."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.images_dir = self.root / "images"
        self.annotations_dir = self.root / "annotations"

    def exists(self) -> bool:
        return all((self.annotations_dir / f"{name}.txt").is_file() for name in ("list", *SPLITS))

    def require(self) -> None:
        if not self.exists():
            raise UserError(
                f"no Oxford-IIIT Pet dataset at {self.root} (annotations/list.txt, trainval.txt, test.txt missing): "
                f"download it with `bash data/download.sh --root {self.root}`, or train offline with data=synthetic"
            )

    def split(self, name: str) -> list[PetRecord]:
        """The records of an official split, in file order."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return read_annotation_list(self.annotations_dir / f"{name}.txt")

    def all_records(self) -> list[PetRecord]:
        return read_annotation_list(self.annotations_dir / "list.txt")

    def image_path(self, record: PetRecord) -> Path:
        return self.images_dir / f"{record.image}.jpg"
