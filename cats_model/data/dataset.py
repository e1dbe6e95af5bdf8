"""A map-style dataset over (image path, class index) samples."""

from PIL import Image, ImageOps
from torch.utils.data import Dataset

from cats_model.data.splits import Sample


def load_rgb(path: str) -> Image.Image:
    """Decode an image as upright RGB, whatever its mode (CMYK, palette, greyscale) or EXIF orientation."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
            return background
        return image.convert("RGB")


class ImageDataset(Dataset):
    def __init__(self, samples: list[Sample], transform):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(load_rgb(path)), label
