"""Augmentation the user controls (issue #41): --crop-scale, --flip/--no-flip, --eval-crop on
train, search and run, defaults per dataset that keep a small image's layout, the choice
recorded in data.json and used again to evaluate and check the deployed model."""
import json

import numpy as np
import pytest
from PIL import Image

from autonl.backends.torch.data import augmentation, data_facts, make_loaders, recorded_eval_crop

from helpers import assert_one_line_error


def write_sides_folder(root, n_train=48, n_val=16, size=16, seed=0):
    """Two classes that a mirror image swaps: a bright bar in the left or the right third."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for cls, cols in (("left", slice(1, 5)), ("right", slice(size - 5, size - 1))):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n // 2):
                img = rng.integers(0, 40, size=(size, size), dtype=np.uint8)
                top = int(rng.integers(0, size - 8))
                img[top:top + 8, cols] = 255
                Image.fromarray(img).save(root / split / cls / f"{i}.png")
    return root


def test_defaults_per_dataset_and_what_was_asked(tmp_path):
    folder = write_sides_folder(tmp_path / "sides", 4, 2)
    assert augmentation(str(folder)) == {"crop_scale": 0.8, "flip": True, "eval_crop": 1.0}
    assert augmentation("digits") == {"crop_scale": 0.6, "flip": False, "eval_crop": None}
    assert augmentation("longrange")["crop_scale"] == 1.0
    assert augmentation(str(folder), crop_scale=1, flip=False, eval_crop=0.875) == \
        {"crop_scale": 1.0, "flip": False, "eval_crop": 0.875}
    facts = data_facts(str(folder), 16, augmentation(str(folder), flip=False))
    assert facts["augmentation"]["flip"] is False and "centre 16x16 crop" in facts["input"]["resize"]
    assert recorded_eval_crop(facts, str(folder)) == 1.0
    old = {k: v for k, v in facts.items() if k != "augmentation"}      # a data.json from before: 0.875
    assert recorded_eval_crop(old, str(folder)) == 0.875 and recorded_eval_crop(None, str(folder)) == 1.0
    with pytest.raises(Exception, match="eval_crop"):
        recorded_eval_crop({**facts, "augmentation": {"eval_crop": float("nan")}}, str(folder))
    # --crop-scale 1 and --no-flip: the training tensors are the evaluation tensors
    train, _, _ = make_loaders(str(folder), 16, 4, workers=0, crop_scale=1, flip=False, eval_crop=1)
    ev, _, _ = make_loaders(str(folder), 16, 4, workers=0, augment=False, eval_crop=1)
    import torch
    a = torch.cat([x for x, _ in train]).sum()
    b = torch.cat([x for x, _ in ev]).sum()
    assert torch.allclose(a, b)


def test_a_folder_a_flip_would_swap_learns_with_no_flip(cli, tmp_path):
    folder = write_sides_folder(tmp_path / "sides")
    common = ["mobilenetv2", "-r", "16", "-w", "0.35", "--data", str(folder), "--steps", "60",
              "--batch-size", "16", "--workers", "0", "--threads", "1", "--lr", "0.05", "--eval-every", "60",
              "--warmup-steps", "5"]
    cli("train", *common, "--no-flip", "--out", tmp_path / "noflip", check_ok=True)
    result = json.loads((tmp_path / "noflip" / "result.json").read_text())
    assert result["val_acc"] >= 0.75, result                  # chance: 0.5
    facts = json.loads((tmp_path / "noflip" / "model" / "data.json").read_text())
    assert facts["augmentation"]["flip"] is False
    assert_one_line_error(cli("train", *common, "--crop-scale", "0", "--out", tmp_path / "bad"), "--crop-scale")
