"""Gallery index: round trip, extend without rewriting shards, crash safety, clear refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from _index_helpers import make_checkpoint, make_images, reference_features, single_thread
from vireid.apps import index as vindex
from vireid.cli import main
from vireid.engine.checkpoint import load_model_from_checkpoint
from vireid.errors import CheckpointError, DataError
from vireid.apps.index import GalleryIndex, build_index, discover_images, folder_labels


_threads = pytest.fixture(scope="module", autouse=True)(single_thread)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    ckpt = make_checkpoint(root / "model.pt", seed=0)
    gallery = make_images(root / "gallery", range(4), 3, seed=1)
    extra = make_images(root / "extra", range(4, 6), 2, seed=2, ext=".jpg")
    model, _, _ = load_model_from_checkpoint(ckpt)
    return root, ckpt, gallery, extra, model


def _build(setup, tmp_path, **kw):
    root, ckpt, gallery, _, _ = setup
    return build_index(ckpt, gallery, tmp_path / "ix", "rgb", labels=folder_labels(gallery),
                       batch_size=4, shard_size=5, **kw)


def test_round_trip_matches_independent_features(setup, tmp_path):
    root, ckpt, gallery, _, model = setup
    seen = []
    _build(setup, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 12) and seen[-1] == (12, 12)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    re = GalleryIndex.open(tmp_path / "ix")
    assert re.count == 12 and len(re.manifest["shards"]) == 3  # 5 + 5 + 2
    assert re.paths == [p.resolve().as_posix() for p in gallery]
    assert re.labels == [p.parent.name for p in gallery]
    F, G = re.features()
    rF, rG = reference_features(model, gallery, "rgb")
    assert F.dtype == np.float32 and F.shape == rF.shape == (12, *re.F_shape)
    np.testing.assert_allclose(F, rF, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(G, rG, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(re.take_F([11, 0, 6]), F[[11, 0, 6]])
    m = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert m["format"] == "vireid-index" and m["format_version"] == 1
    meta_model = m["model"]
    import hashlib
    assert meta_model["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    from _index_helpers import tiny_cfg
    assert meta_model["config_digest"] == tiny_cfg().digest()
    assert m["feature"] == {"F_shape": list(re.F_shape), "G_dim": re.F_shape[0], "dtype": "float32"}


def test_extend_appends_without_rewriting(setup, tmp_path):
    root, ckpt, gallery, extra, model = setup
    ix = _build(setup, tmp_path)
    F0, G0 = ix.features()
    shard_files = sorted((tmp_path / "ix" / "shards").iterdir())
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in shard_files}
    ix2 = ix.extend(extra, folder_labels(extra), batch_size=3, shard_size=3)
    assert ix2.count == 16 and len(ix2.manifest["shards"]) == 5
    for name, (mtime, data) in before.items():
        p = tmp_path / "ix" / "shards" / name
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data
    F1, G1 = GalleryIndex.open(tmp_path / "ix").features()
    np.testing.assert_array_equal(F1[:12], F0)
    np.testing.assert_array_equal(G1[:12], G0)
    rF, _ = reference_features(model, extra, "rgb")
    np.testing.assert_allclose(F1[12:], rF, rtol=1e-4, atol=1e-5)
    assert ix2.paths[12:] == [p.resolve().as_posix() for p in extra]
    assert ix2.labels[12:] == ["0004", "0004", "0005", "0005"]
    # Paths already indexed are skipped.
    assert ix2.extend(gallery + extra[:1]).count == 16


def test_crash_during_extend_leaves_old_index(setup, tmp_path, monkeypatch):
    root, ckpt, gallery, extra, _ = setup
    ix = _build(setup, tmp_path)
    F0, _ = ix.features()
    real = vindex.atomic_write_text

    def failing(path, text):
        if path.name == "manifest.json":
            raise OSError("simulated crash before the manifest lands")
        real(path, text)

    monkeypatch.setattr(vindex, "atomic_write_text", failing)
    with pytest.raises(OSError):
        ix.extend(extra)
    monkeypatch.undo()
    again = GalleryIndex.open(tmp_path / "ix")
    assert again.count == 12 and again.paths == ix.paths
    np.testing.assert_array_equal(again.features()[0], F0)
    # The next extend works and reuses the orphaned shard number.
    assert again.extend(extra).count == 16


def test_other_model_or_version_is_refused(setup, tmp_path):
    root, ckpt, gallery, extra, _ = setup
    ix = _build(setup, tmp_path)
    other = make_checkpoint(tmp_path / "other.pt", seed=1)
    _, _, other_meta = load_model_from_checkpoint(other)
    with pytest.raises(CheckpointError) as err:
        ix.extend(extra, checkpoint=other)
    assert ix.model_digest in str(err.value) and other_meta["model_digest"] in str(err.value)
    with pytest.raises(CheckpointError) as err:
        GalleryIndex.open(tmp_path / "ix", expect_digest="0123456789abcdef")
    assert "0123456789abcdef" in str(err.value) and ix.model_digest in str(err.value)
    m = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    m["format_version"] = 2
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match=r"version 2.*version 1"):
        GalleryIndex.open(tmp_path / "ix")
    m["format_version"], m["format"] = 1, "something-else"
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="not a vireid index"):
        GalleryIndex.open(tmp_path / "ix")
    with pytest.raises(CheckpointError, match="not a vireid index"):
        GalleryIndex.open(tmp_path)


def test_discovery_and_bad_images(setup, tmp_path):
    root, ckpt, *_ = setup
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        discover_images(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        discover_images(tmp_path / "missing")
    d = tmp_path / "mixed" / "b"
    d.mkdir(parents=True)
    for name in ("z.PNG", "a.jpeg", "m.BMP"):
        Image.new("RGB", (8, 8)).save(d / name)
    Image.new("RGB", (8, 8)).save(tmp_path / "mixed" / "c.jpg")
    names = [p.name for p in discover_images(tmp_path / "mixed")]
    assert names == ["a.jpeg", "m.BMP", "z.PNG", "c.jpg"]  # sorted by full path
    (d / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="broken.jpg"):
        build_index(ckpt, discover_images(tmp_path / "mixed"), tmp_path / "ix", "rgb")
    assert not (tmp_path / "ix" / "manifest.json").exists()


def test_cli_build_extend_info(setup, tmp_path, capsys):
    root, ckpt, gallery, extra, _ = setup
    out = tmp_path / "cli-ix"
    assert main(["index", "build", "--checkpoint", str(ckpt), "--images", str(root / "gallery"),
                 "-o", str(out), "--modality", "ir", "--labels-from-folders", "--batch-size", "6",
                 "--no-progress"]) == 0
    assert main(["index", "build", "--checkpoint", str(ckpt), "--images", str(root / "gallery"),
                 "-o", str(out), "--no-progress"]) == 2  # refuses to overwrite silently
    assert main(["index", "extend", "--index", str(out), "--images", str(root / "extra"),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["index", "info", "--index", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 16 and info["modality"] == "ir" and info["labels"] is True
    assert main(["index", "build", "--checkpoint", str(ckpt), "--images",
                 str(tmp_path / "nothing"), "-o", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "error:" in capsys.readouterr().err
