"""Augmentation of whole uint8 batches from the decoded-image cache, on the device the batch is on.

Random resized crop and flip: on a GPU one affine resampling of the whole batch; on a CPU a uint8 antialiased
resize per image (torch's vectorised kernel), which is several times cheaper there. Colour jitter and
normalisation are linear in the pixel values, so they fuse into one 3x3 colour matrix and offset per image,
applied in a single batched multiply.

On a GPU nothing here waits for it: random draws are made on the device, and the few constants are copied
without blocking (a blocking copy to the GPU waits for every queued kernel, the previous step's included).
"""

import math

import torch
import torch.nn.functional as F

GREY = (0.299, 0.587, 0.114)  # luma weights, as torchvision's adjust_saturation / adjust_contrast use


def sample_boxes(n: int, scale: tuple[float, float], ratio=(3 / 4, 4 / 3), device=None) -> torch.Tensor:
    """(n, 5) on `device`: width, height, centre x, centre y as fractions of the side, and +1/-1 for mirroring."""
    area = torch.empty(n, device=device).uniform_(*scale)
    aspect = torch.exp(torch.empty(n, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = torch.rand(n, device=device) * (1 - width) + width / 2
    centre_y = torch.rand(n, device=device) * (1 - height) + height / 2
    mirror = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)
    return torch.stack([width, height, centre_x, centre_y, mirror], dim=1)


def crop_resize_flip(
    images: torch.Tensor, size: int, boxes: torch.Tensor, method: str | None = None
) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, size, size) in 0..255, each image cut to its box, resized, mirrored.
    method "grid" (float out; boxes on the images' device) or "resize" (uint8 out; boxes on the CPU)."""
    method = method or ("grid" if images.is_cuda else "resize")
    chw = images.permute(0, 3, 1, 2)
    if method == "grid":
        theta = torch.zeros(len(boxes), 2, 3, device=boxes.device)
        theta[:, 0, 0], theta[:, 0, 2] = boxes[:, 0] * boxes[:, 4], boxes[:, 2] * 2 - 1
        theta[:, 1, 1], theta[:, 1, 2] = boxes[:, 1], boxes[:, 3] * 2 - 1
        grid = F.affine_grid(theta, [len(boxes), 3, size, size], align_corners=False)
        return F.grid_sample(
            chw.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
    side_y, side_x = chw.shape[2], chw.shape[3]
    out = torch.empty(len(boxes), 3, size, size, dtype=torch.uint8)
    for i, (width, height, centre_x, centre_y, mirror) in enumerate(boxes.tolist()):
        w, h = max(1, round(width * side_x)), max(1, round(height * side_y))
        left = min(side_x - w, max(0, round(centre_x * side_x - w / 2)))
        top = min(side_y - h, max(0, round(centre_y * side_y - h / 2)))
        crop = F.interpolate(
            chw[i : i + 1, :, top : top + h, left : left + w],
            size=(size, size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        out[i] = crop[0].flip(-1) if mirror < 0 else crop[0]
    return out


def centre_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, size, size) uint8: the eval view."""
    top, left = (images.shape[1] - size) // 2, (images.shape[2] - size) // 2
    return images[:, top : top + size, left : left + size].permute(0, 3, 1, 2)


class WorkerCrop:
    """The crop step, run inside DataLoader workers when training on a CPU, beside the training process, which
    is left only the fused colour step. (Measured and dropped: converting to float in the worker, four times the
    bytes to hand over; allocating the batch in shared memory in the worker, slower per batch than the copy.)"""

    def __init__(self, size: int, scale: tuple[float, float] | None):
        self.size, self.scale = size, scale  # scale None: the eval centre crop

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            return centre_crop(images, self.size).contiguous()
        return crop_resize_flip(images, self.size, sample_boxes(len(images), self.scale), method="resize")


def jitter_and_normalize(images: torch.Tensor, strength: float, mean, std) -> torch.Tensor:
    """(N, 3, H, W) pixel values in 0..255 (uint8 or float) -> normalised float, after per-image brightness,
    contrast and saturation factors drawn from [1 - strength, 1 + strength] (0: normalisation alone, for eval)."""
    n, device = images.shape[0], images.device

    def constant(values):
        return torch.tensor(values).to(device, non_blocking=True)

    factors = torch.empty(3, n, device=device)
    b, c, s = factors.uniform_(1 - strength, 1 + strength) if strength > 0 else factors.fill_(1.0)
    weights = constant(GREY)
    eye = torch.eye(3, device=device)
    # saturation: x -> s x + (1 - s) grey(x); it maps grey to grey, so it commutes with the contrast offset
    saturation = s.view(n, 1, 1) * eye + (1 - s).view(n, 1, 1) * weights.view(1, 1, 3).expand(n, 3, 3)
    # brightness then contrast: x -> c b x + (1 - c) * mean grey of b x (the mean from every 4th pixel: enough)
    grey_mean = images[:, :, ::4, ::4].float().mean(dim=(2, 3)) @ weights / 255 * b
    inv_std = 1 / constant(std)
    matrix = inv_std.view(1, 3, 1) * (c * b).view(n, 1, 1) * saturation / 255
    offset = inv_std.view(1, 3) * (((1 - c) * grey_mean).view(n, 1) - constant(mean).view(1, 3))
    # On a CPU a few images at a time, so that their float copy stays in cache (measured: 27 -> 16 ms for 64
    # images at 224 px); on a GPU the whole batch in one call.
    pixels, chunk = images.reshape(n, 3, -1), n if images.is_cuda else 8
    out = torch.empty(pixels.shape, device=device)
    for i in range(0, n, chunk):
        part = slice(i, i + chunk)
        torch.baddbmm(offset[part].unsqueeze(2), matrix[part], pixels[part].float(), out=out[part])
    return out.view(images.shape)
