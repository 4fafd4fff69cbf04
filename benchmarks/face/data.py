"""Face images for the verification benchmark: an ImageFolder tree (LFW) or a seeded synthetic set.

Both sources return a :class:`FaceSet`: grey images as a uint8 tensor ``(N, 1, S, S)`` held in memory (decoded and
preprocessed once), integer identity labels and the identity names. Identities, never images, are split
between training and test by :func:`split_identities`.

Face preprocessing (``load_image_folder``): convert to grey, take the centre square of side
``crop_fraction * min(H, W)`` (LFW deep-funneled: 250 px → the central 120 px, the face from brows to chin),
resize it to ``S × S`` with bilinear antialiasing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LFW = REPO_ROOT.parent / "shared" / "data" / "lfw-deepfunneled"


@dataclass
class FaceSet:
    """``images`` ``(N, 1, S, S)`` uint8, ``labels`` ``(N,)`` int64 in ``[0, len(names))``, ``names`` per identity."""

    images: Tensor
    labels: Tensor
    names: list[str]
    description: str

    def subset(self, identities: Tensor) -> FaceSet:
        """The images of the given identity indices, relabelled ``0..len(identities)-1`` in that order."""
        remap = torch.full((len(self.names),), -1, dtype=torch.int64)
        remap[identities] = torch.arange(identities.numel())
        keep = remap[self.labels] >= 0
        return FaceSet(
            self.images[keep], remap[self.labels[keep]], [self.names[i] for i in identities.tolist()], self.description
        )


def split_identities(num_identities: int, num_test: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Disjoint (train, test) identity indices: a seeded permutation, the last ``num_test`` are test. Sorted."""
    if not 0 < num_test < num_identities:
        raise ValueError(f"num_test must be in (0, {num_identities}), got {num_test}")
    perm = torch.randperm(num_identities, generator=torch.Generator().manual_seed(seed))
    return perm[:-num_test].sort().values, perm[-num_test:].sort().values


def load_image_folder(root: str | Path, size: int = 64, crop_fraction: float = 0.48, min_images: int = 2) -> FaceSet:
    """Every image of an ImageFolder tree (one sub-folder per identity), preprocessed as in the module docstring.

    Identities with fewer than ``min_images`` images are skipped (they cannot form a positive pair).
    """
    from PIL import Image  # benchmark extra; imported here so the synthetic path needs no pillow

    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    images, labels, names = [], [], []
    for folder in folders:
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < min_images:
            continue
        for f in files:
            with Image.open(f) as im:
                grey = im.convert("L")
                w, h = grey.size
                side = max(1, round(crop_fraction * min(w, h)))
                left, top = (w - side) // 2, (h - side) // 2
                face = grey.crop((left, top, left + side, top + side)).resize(
                    (size, size), Image.BILINEAR, reducing_gap=None
                )
                images.append(torch.frombuffer(bytearray(face.tobytes()), dtype=torch.uint8).view(1, size, size))
            labels.append(len(names))
        names.append(folder.name)
    if len(names) < 2:
        raise FileNotFoundError(f"{root}: need an ImageFolder tree with >= 2 identities of >= {min_images} images")
    desc = f"ImageFolder {root} ({len(names)} identities, {len(images)} images, grey {size}x{size})"
    return FaceSet(torch.stack(images), torch.tensor(labels), names, desc)


def synthetic_identities(num_identities: int = 200, per_identity: int = 12, size: int = 64, seed: int = 0) -> FaceSet:
    """Procedurally generated "faces": honestly synthetic, no download, fully determined by ``seed``.

    Each identity is a random grey template: an ellipse (head) whose width, height and brightness vary, two dark
    blobs (eyes) at a random height and spacing, a mouth bar of random width, and a random low-frequency texture.
    Each image of an identity applies a random rotation (±10°), scale (±8 %), shift (±6 % of the side),
    illumination gradient, contrast change and pixel noise. The task (which template?) is a stand-in for face
    identity, not a face model; use it to check that the pipeline runs, not to rank losses for real faces.
    """
    g = torch.Generator().manual_seed(seed)

    def u(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    n = num_identities
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    head = ((xs / u(0.55, 0.8, n, 1, 1)) ** 2 + (ys / u(0.7, 0.95, n, 1, 1)) ** 2 < 1).float()
    eye_y, eye_dx, eye_r = u(-0.35, -0.05, n, 1, 1), u(0.2, 0.4, n, 1, 1), u(0.07, 0.15, n, 1, 1)
    eyes = sum(torch.exp(-((xs - sx * eye_dx) ** 2 + (ys - eye_y) ** 2) / eye_r**2) for sx in (-1.0, 1.0))
    mouth_y, mouth_w = u(0.3, 0.6, n, 1, 1), u(0.15, 0.45, n, 1, 1)
    mouth = torch.exp(-((ys - mouth_y) ** 2) / 0.004 - (xs / mouth_w) ** 8)
    texture = F.interpolate(
        torch.randn(n, 1, 6, 6, generator=g), size=(size, size), mode="bicubic", align_corners=False
    )[:, 0]
    templates = head * u(0.5, 0.9, n, 1, 1) - 0.5 * eyes - 0.4 * mouth + 0.15 * texture + 0.1  # (n, S, S)

    idx = torch.arange(n).repeat_interleave(per_identity)
    m = idx.numel()
    angle, scale = torch.deg2rad(u(-10, 10, m)), u(0.92, 1.08, m)
    theta = torch.zeros(m, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) / scale, -torch.sin(angle) / scale
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) / scale, torch.cos(angle) / scale
    theta[:, :, 2] = u(-0.12, 0.12, m, 2)
    grid = F.affine_grid(theta, [m, 1, size, size], align_corners=False)
    img = F.grid_sample(templates[idx, None], grid, padding_mode="border", align_corners=False)[:, 0]
    phi = u(0, 2 * math.pi, m, 1, 1)
    light = 1 + u(0, 0.4, m, 1, 1) * (torch.cos(phi) * xs + torch.sin(phi) * ys)
    img = img * light * u(0.7, 1.3, m, 1, 1) + u(-0.1, 0.1, m, 1, 1) + 0.06 * torch.randn(m, size, size, generator=g)
    img = ((img.clamp(-0.5, 1.0) + 0.5) / 1.5 * 255).round().to(torch.uint8)
    names = [f"synthetic_{i:04d}" for i in range(n)]
    desc = (
        f"SYNTHETIC procedurally generated identities (seed {seed}; {n} identities x {per_identity} images, "
        f"grey {size}x{size}) - not real faces"
    )
    return FaceSet(img[:, None], idx, names, desc)


def resolve_data(data: str, size: int = 64, synthetic_seed: int = 0) -> FaceSet:
    """``"auto"``: LFW at ``../shared/data/lfw-deepfunneled`` if present, else the synthetic set;
    ``"synthetic"``: the synthetic set; anything else: an ImageFolder path."""
    if data == "synthetic" or (data == "auto" and not DEFAULT_LFW.is_dir()):
        return synthetic_identities(size=size, seed=synthetic_seed)
    return load_image_folder(DEFAULT_LFW if data == "auto" else data, size=size)
