"""The synthetic generator: real layouts, determinism across workers, no colour in IR."""
import hashlib
import re

import numpy as np
import pytest
from PIL import Image

from vireid.data.images import decode_image
from vireid.data.regdb import load_regdb
from vireid.data.synthetic import generate
from vireid.data.synthetic_render import knobs_for, make_identity, make_pools
from vireid.data.sysu import load_sysu
from vireid.errors import ConfigError

SMALL = dict(rgb_size=(40, 20), ir_size=(28, 14))


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sysu(tmp_path_factory):
    root = tmp_path_factory.mktemp("sysu")
    generate("sysu", root, ids=24, seed=3, workers=1, images_per_camera=(1, 2), **SMALL)
    return root


def test_sysu_layout_loads_and_names_match(sysu):
    files = [p.relative_to(sysu).as_posix() for p in sysu.rglob("*.jpg")]
    assert files and all(re.fullmatch(r"cam[1-6]/\d{4}/\d{4}\.jpg", f) for f in files)
    first = (sysu / "exp" / "train_id.txt").read_text().splitlines()[0]
    assert re.fullmatch(r"\d+(,\d+)*", first)
    ds = load_sysu(sysu)
    assert ds.unlisted_ids, "some id folders must be in no split"
    assert not set(ds.test_ids) & set(ds.trainval_ids)
    n_listed = len(ds.trainval_ids) + len(ds.test_ids)
    assert len(ds.test_ids) == round(n_listed * 96 / 491)
    cams = {p: ds.cameras_of(p) for p in ds.trainval_ids + ds.test_ids}
    assert any(len(c) < 6 for c in cams.values()), "not every id in every camera"
    for p in ds.test_ids:  # test ids can be queried (IR) and found (RGB)
        assert set(cams[p]) & {3, 6} and set(cams[p]) & {1, 2, 4, 5}
    assert len(ds.train.rgb) > 0 and len(ds.train.ir) > 0


def test_sysu_ir_has_no_colour_and_sizes_differ(sysu):
    modes = {}
    for cam in (3, 6):
        for p in sorted(sysu.glob(f"cam{cam}/*/*.jpg"))[:5]:
            with Image.open(p) as im:
                modes.setdefault(cam, set()).add(im.mode)
            a = decode_image(p).astype(int)
            assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])
    assert modes == {3: {"RGB"}, 6: {"L"}}  # both kinds of IR JPEG occur
    rgb_h = np.mean([Image.open(p).size[1] for p in list(sysu.glob("cam1/*/*.jpg"))[:10]])
    ir_h = np.mean([Image.open(p).size[1] for p in list(sysu.glob("cam3/*/*.jpg"))[:10]])
    assert rgb_h > ir_h * 1.15
    # RGB images do carry colour
    a = decode_image(next(sysu.glob("cam1/*/*.jpg"))).astype(int)
    assert np.abs(a[..., 0] - a[..., 2]).mean() > 3


def test_deterministic_across_workers(tmp_path, sysu):
    b = tmp_path / "b"
    generate("sysu", b, ids=24, seed=3, workers=2, images_per_camera=(1, 2), **SMALL)
    assert _digest(b) == _digest(sysu)
    c = tmp_path / "c"
    generate("sysu", c, ids=24, seed=4, workers=1, images_per_camera=(1, 2), **SMALL)
    assert _digest(c) != _digest(sysu)


def test_regdb_layout(tmp_path):
    root = tmp_path / "regdb"
    info = generate("regdb", root, ids=6, seed=0, rgb_size=(32, 16), ir_size=(30, 14))
    assert info["images"] == 120
    for folder, m in (("Visible", "v"), ("Thermal", "t")):
        files = [p.relative_to(root).as_posix() for p in (root / folder).rglob("*")
                 if p.is_file()]
        assert len(files) == 60
        for f in files:
            mm = re.fullmatch(rf"{folder}/(\d+)/(male|female)_(front|back)_{m}_\d{{5}}_(\d+)\.bmp", f)
            assert mm and mm.group(1) == mm.group(4)
    ds = load_regdb(root)
    assert ds.trials == list(range(1, 11))
    splits = set()
    for t in (1, 2, 10):
        tr = ds.train(t)
        vis, th = ds.test(t)
        assert tr.labels == {0: 0, 1: 1, 2: 2} and len(tr.rgb) == len(tr.ir) == 30
        assert len(vis) == len(th) == 30
        train_f = {ds.folder_id(r) for r in tr.rgb}
        test_f = {ds.folder_id(r) for r in vis}
        assert not train_f & test_f and len(train_f | test_f) == 6
        splits.add(frozenset(train_f))
    assert len(splits) > 1  # trials differ
    th_img = decode_image(root / ds.test(1)[1][0].path).astype(int)
    assert th_img.shape[:2] == (30, 14) and (th_img[..., 0] == th_img[..., 2]).all()
    assert decode_image(root / ds.test(1)[0][0].path).shape[:2] == (32, 16)


def test_ir_response_is_not_a_function_of_colour():
    k = knobs_for(1.0)
    pools = make_pools(0, k)
    by_colour = {}
    for pid in range(1, 200):
        ident = make_identity(0, pid, pools, k)
        by_colour.setdefault(tuple(np.round(ident["upper"], 6)), set()).add(ident["upper_ir"])
    # the same garment colour comes with different IR responses across identities
    assert sum(len(v) > 1 for v in by_colour.values()) >= len(by_colour) // 2


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError):
        generate("market", tmp_path, ids=10)
    with pytest.raises(ConfigError):
        generate("sysu", tmp_path, ids=2)
    with pytest.raises(ConfigError):
        knobs_for(-1)
