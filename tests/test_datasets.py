"""Loaders of the real layouts (hand-built tiny folders), the image cache and the transforms."""
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from vireid.data.cache import ImageCache
from vireid.data.images import decode_image
from vireid.data.llcm import load_llcm
from vireid.data.regdb import load_regdb
from vireid.data.sysu import load_sysu
from vireid.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, EvalTransform,
                                    TrainTransform, random_hflip, random_pad_crop)
from vireid.errors import ConfigError, DataError
from vireid.utils.atomic import TMP_MARK


def _img(path, value=0, size=(4, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def make_sysu(root, train=(1, 2, 5), val=(3,), test=(4, 6), folders=None):
    """folders: {pid: {cam: n_images}}; default every listed id in cams 1 and 3 (2 images)."""
    if folders is None:
        folders = {p: {1: 2, 3: 2} for p in (*train, *val, *test)}
    for c in range(1, 7):
        (root / f"cam{c}").mkdir(parents=True, exist_ok=True)
    for pid, cams in folders.items():
        for cam, n in cams.items():
            for i in range(n):
                _img(root / f"cam{cam}" / f"{pid:04d}" / f"{i + 1:04d}.jpg", 10 * pid)
    (root / "exp").mkdir(exist_ok=True)
    for name, ids in (("train_id.txt", train), ("val_id.txt", val), ("test_id.txt", test)):
        (root / "exp" / name).write_text(",".join(str(i) for i in ids) + "\n")
    return root


# ---------------------------------------------------------------- SYSU


def test_sysu_loads_train_val_and_orders_images(tmp_path):
    folders = {1: {1: 2, 3: 1, 6: 1}, 2: {2: 1, 6: 2}, 3: {4: 1, 3: 1}, 5: {1: 1},
               4: {1: 1, 2: 1, 3: 1}, 6: {5: 2, 6: 1}, 9: {1: 3}}  # 9: in no list
    ds = load_sysu(make_sysu(tmp_path, folders=folders))
    assert ds.train_ids == [1, 2, 5] and ds.val_ids == [3] and ds.test_ids == [4, 6]
    assert ds.train.labels == {1: 0, 2: 1, 3: 2, 5: 3}
    assert ds.unlisted_ids == [9]
    assert ds.train_single_modality_ids == [5]   # id 5 only has an RGB folder
    assert all(r.modality == "rgb" and r.camid in (1, 2, 4, 5) for r in ds.train.rgb)
    assert all(r.modality == "ir" and r.camid in (3, 6) for r in ds.train.ir)
    recs = ds.images([6, 4], cams=(3, 1, 2, 5, 6))
    keys = [(r.pid, r.camid, r.path) for r in recs]
    assert keys == [(4, 3, "cam3/0004/0001.jpg"), (4, 1, "cam1/0004/0001.jpg"),
                    (4, 2, "cam2/0004/0001.jpg"), (6, 5, "cam5/0006/0001.jpg"),
                    (6, 5, "cam5/0006/0002.jpg"), (6, 6, "cam6/0006/0001.jpg")]
    for r in recs:
        assert re.fullmatch(r"cam[1-6]/\d{4}/\d{4}\.jpg", r.path)
        assert (tmp_path / r.path).is_file()
    s = ds.summary()
    assert s["test"]["ids"] == 2 and s["test"]["cameras"]["cam5"]["images"] == 2


def test_sysu_missing_root(tmp_path):
    with pytest.raises(DataError, match="root not found"):
        load_sysu(tmp_path / "nowhere")


def test_sysu_missing_exp_file(tmp_path):
    root = make_sysu(tmp_path)
    os.remove(root / "exp" / "val_id.txt")
    with pytest.raises(DataError, match=r"expected .*exp/val_id\.txt"):
        load_sysu(root)


def test_sysu_wrong_layout_names_what_was_found(tmp_path):
    (tmp_path / "Visible").mkdir()
    (tmp_path / "Thermal").mkdir()
    with pytest.raises(DataError) as e:
        load_sysu(tmp_path)
    msg = str(e.value)
    assert "cam1" in msg and "Visible" in msg and "expected" in msg


def test_sysu_malformed_id_line(tmp_path):
    root = make_sysu(tmp_path)
    (root / "exp" / "test_id.txt").write_text("4, six\n")
    with pytest.raises(DataError, match=r"test_id\.txt.*'six'"):
        load_sysu(root)


def test_sysu_listed_id_absent(tmp_path):
    root = make_sysu(tmp_path, test=(4, 6, 77),
                     folders={p: {1: 1, 3: 1} for p in (1, 2, 3, 4, 5, 6)})
    with pytest.raises(DataError, match="0077"):
        load_sysu(root)


def test_sysu_overlapping_splits(tmp_path):
    root = make_sysu(tmp_path, test=(4, 6, 1))
    with pytest.raises(DataError, match="disjoint"):
        load_sysu(root)


# ---------------------------------------------------------------- RegDB


def make_regdb(root, n_ids=4, trials=(1,), train_labels=None):
    for pid in range(1, n_ids + 1):
        for j in range(2):
            _img(root / "Visible" / str(pid) / f"male_front_v_{pid * 10 + j:05d}_{pid}.bmp", pid)
            _img(root / "Thermal" / str(pid) / f"male_front_t_{pid * 10 + j:05d}_{pid}.bmp", pid)
    (root / "idx").mkdir(parents=True, exist_ok=True)
    half = n_ids // 2
    for t in trials:
        for split, ids in (("train", range(1, half + 1)), ("test", range(n_ids, half, -1))):
            for word, folder, m in (("visible", "Visible", "v"), ("thermal", "Thermal", "t")):
                lines = []
                for k, pid in enumerate(ids):
                    lab = train_labels[k] if (split == "train" and train_labels) else k
                    for j in range(2):
                        lines.append(f"{folder}/{pid}/male_front_{m}_{pid * 10 + j:05d}_{pid}.bmp {lab}")
                (root / "idx" / f"{split}_{word}_{t}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_regdb_train_and_test(tmp_path):
    ds = load_regdb(make_regdb(tmp_path, trials=(1, 2)))
    assert ds.trials == [1, 2]
    tr = ds.train(2)
    assert tr.labels == {0: 0, 1: 1} and len(tr.rgb) == 4 and len(tr.ir) == 4
    assert {r.camid for r in tr.rgb} == {1} and {r.camid for r in tr.ir} == {2}
    vis, th = ds.test(1)
    # file order is kept (the test file lists ids 4 then 3)
    assert [r.path for r in vis] == [f"Visible/{p}/male_front_v_{p * 10 + j:05d}_{p}.bmp"
                                     for p in (4, 3) for j in range(2)]
    assert [r.pid for r in th] == [0, 0, 1, 1]
    assert [ds.folder_id(r) for r in th] == [4, 4, 3, 3]


def test_regdb_bad_trial_and_missing_trial(tmp_path):
    ds = load_regdb(make_regdb(tmp_path))
    for bad in (0, 11, "1"):
        with pytest.raises(ConfigError, match="1..10"):
            ds.train(bad)
    with pytest.raises(DataError, match="train_visible_3.txt"):
        ds.train(3)


def test_regdb_malformed_line(tmp_path):
    root = make_regdb(tmp_path)
    p = root / "idx" / "train_thermal_1.txt"
    p.write_text(p.read_text() + "Thermal/1/x.bmp label\n")
    with pytest.raises(DataError, match=r"train_thermal_1\.txt:5: expected '<relative path> "):
        load_regdb(root).train(1)


def test_regdb_noncontiguous_labels(tmp_path):
    root = make_regdb(tmp_path, n_ids=6, train_labels=[0, 2, 3])
    with pytest.raises(DataError, match="contiguous"):
        load_regdb(root).train(1)


def test_regdb_wrong_layout(tmp_path):
    make_sysu(tmp_path)
    with pytest.raises(DataError, match=r"expected .*Visible.*found \['cam1'"):
        load_regdb(tmp_path)


def test_regdb_missing_image(tmp_path):
    root = make_regdb(tmp_path)
    os.remove(root / "Thermal" / "1" / "male_front_t_00010_1.bmp")
    with pytest.raises(DataError, match="missing"):
        load_regdb(root).train(1)


# ---------------------------------------------------------------- LLCM


def test_llcm_layout(tmp_path):
    root = tmp_path
    (root / "idx").mkdir()
    (root / "idx" / "train_vis.txt").write_text("vis/0001/0001_c03_s1_f1_vis.jpg 0\n")
    (root / "idx" / "train_nir.txt").write_text("nir/0001/0001_c02_s1_f1_nir.jpg 0\n")
    (root / "idx" / "test_id.txt").write_text("7,8\n")
    _img(root / "vis/0001/0001_c03_s1_f1_vis.jpg")
    _img(root / "nir/0001/0001_c02_s1_f1_nir.jpg")
    for mod, cams in (("test_vis", (1, 3)), ("test_nir", (2,))):
        for c in cams:
            for pid in (8, 7):
                _img(root / mod / f"cam{c}" / f"{pid:04d}" / "a.jpg")
    ds = load_llcm(root)
    assert ds.train.labels == {0: 0} and ds.train.rgb[0].camid == 3 and ds.train.ir[0].camid == 2
    assert ds.test_ids == [7, 8]
    recs = ds.images(ds.test_ids, "rgb")
    assert [(r.pid, r.camid) for r in recs] == [(7, 1), (7, 3), (8, 1), (8, 3)]
    assert recs[0].path == "test_vis/cam1/0007/a.jpg"
    assert [r.camid for r in ds.images([8], "ir")] == [2]


def test_llcm_missing_index(tmp_path):
    for d in ("idx", "test_vis", "test_nir"):
        (tmp_path / d).mkdir()
    with pytest.raises(DataError, match=r"expected .*train_vis\.txt"):
        load_llcm(tmp_path)


# ---------------------------------------------------------------- cache


def test_cache_round_trip_and_invalidation(tmp_path):
    root = make_sysu(tmp_path / "data")
    ds = load_sysu(root)
    recs = ds.train.ir + ds.train.rgb + ds.train.rgb[:1]  # unsorted, with a duplicate
    calls = []
    c1 = ImageCache.build(root, recs, (6, 3), cache_dir=tmp_path / "c",
                          progress=lambda d, t: calls.append((d, t)))
    assert len(c1) == len(recs) and c1.array.shape[1:] == (6, 3, 3)
    assert calls[-1] == (len({r.path for r in recs}),) * 2
    for i, r in enumerate(recs):
        assert np.array_equal(c1[i], decode_image(root / r.path, (6, 3)))
    assert np.array_equal(c1.batch([0, 2]), np.stack([c1[0], c1[2]]))
    # reused: nothing decoded the second time, same file
    calls.clear()
    c2 = ImageCache.build(root, list(reversed(recs)), (6, 3), cache_dir=tmp_path / "c",
                          progress=lambda d, t: calls.append(d))
    assert calls == [] and c2.path == c1.path
    assert np.array_equal(c2[0], c1[len(recs) - 1])
    # another size -> another entry
    assert ImageCache.build(root, recs, (4, 2), cache_dir=tmp_path / "c").path != c1.path
    # a changed file -> rebuilt with the new pixels
    target = root / recs[0].path
    Image.new("RGB", (4, 8), (250, 1, 1)).save(target)
    os.utime(target, ns=(1, 10**9))
    c3 = ImageCache.build(root, recs, (6, 3), cache_dir=tmp_path / "c")
    assert c3.path != c1.path
    assert np.array_equal(c3[0], decode_image(target, (6, 3)))
    assert not any(TMP_MARK in p.name for p in (tmp_path / "c").iterdir())


def test_cache_default_dir_and_missing_file(tmp_path):
    root = make_sysu(tmp_path)
    ds = load_sysu(root)
    c = ImageCache.build(root, ds.train.rgb, (4, 2))
    assert c.path.parent == root / ".vireid-cache"
    os.remove(root / ds.train.ir[0].path)
    with pytest.raises(DataError, match="missing"):
        ImageCache.build(root, ds.train.ir, (4, 2))


# ---------------------------------------------------------------- transforms


def test_test_transform_matches_loop():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 3, 4, 3), dtype=np.uint8)
    out = EvalTransform()(imgs)
    assert out.shape == (2, 3, 3, 4) and out.dtype == torch.float32
    for b in range(2):
        for c in range(3):
            for y in range(3):
                for x in range(4):
                    ref = (imgs[b, y, x, c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
                    assert abs(out[b, c, y, x].item() - ref) < 1e-5


def test_pad_crop_is_a_window_of_the_zero_padded_image():
    x = torch.rand(6, 2, 5, 4) + 0.1
    pad = 2
    g = torch.Generator().manual_seed(3)
    out = random_pad_crop(x, pad, g)
    assert out.shape == x.shape
    offsets = set()
    for b in range(6):
        padded = torch.zeros(2, 5 + 2 * pad, 4 + 2 * pad)
        padded[:, pad:pad + 5, pad:pad + 4] = x[b]
        hits = [(oy, ox) for oy in range(2 * pad + 1) for ox in range(2 * pad + 1)
                if torch.equal(padded[:, oy:oy + 5, ox:ox + 4], out[b])]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 1  # not the same crop for every image
    assert torch.equal(random_pad_crop(x, pad, torch.Generator().manual_seed(3)), out)


def test_flip_and_train_transform_reproducible():
    x = torch.rand(16, 3, 4, 5)
    out = random_hflip(x, 0.5, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[b], x[b].flip(-1)) for b in range(16)]
    kept = [torch.equal(out[b], x[b]) for b in range(16)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    imgs = np.random.default_rng(0).integers(0, 256, (4, 8, 6, 3), dtype=np.uint8)
    t = TrainTransform(pad=2)
    a = t(imgs, torch.Generator().manual_seed(5))
    b = t(imgs, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (4, 3, 8, 6)
    plain = TrainTransform(pad=0, flip=False)(imgs, torch.Generator().manual_seed(5))
    assert torch.allclose(plain, EvalTransform()(imgs))
