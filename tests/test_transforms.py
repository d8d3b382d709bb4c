"""MONAI-style medgpu transforms: array and dictionary forms inside ``Compose`` pipelines,
and MONAI's conventions (aliases, keys, allow_missing_keys). Random codec weights."""
from __future__ import annotations

import pickle

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, MapTransform, Transform

import medgpu
from medgpu import transforms as T
from medgpu.codec import load_codec
from medgpu.errors import OptionError

SHAPE = (16, 14, 7)
AFFINE = np.array([[0.9, 0, 0, -7.0], [0, 0.8, 0, -8.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1]])
OPTS = dict(gop=3, device="cpu")


@pytest.fixture(scope="module")
def codec():
    return load_codec(pretrained=False)


@pytest.fixture(scope="module")
def nifti(tmp_path_factory):
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    data = (700 * np.exp(-3 * (x**2 + y**2)) * (1 + 0.3 * z)).astype(np.int16)
    path = tmp_path_factory.mktemp("tr") / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


@pytest.fixture
def image(nifti):
    """What a MONAI pipeline holds: a channel-first float MetaTensor with meta."""
    return Compose([LoadImaged(keys="image"), EnsureChannelFirstd(keys="image")])({"image": str(nifti)})["image"]


# ------------------------------------------------------------------------------ array forms


def test_compress_and_decompress_array_forms(tmp_path, image, codec):
    path = T.CompressToMgpu(out_dir=tmp_path, codec=codec, **OPTS)(image)
    assert path == str(tmp_path / "ct.mgpu")  # named after filename_or_obj
    out = T.DecompressMgpu(codec=codec, device="cpu", ensure_channel_first=True)(path)
    assert isinstance(out, MetaTensor) and out.shape == image.shape and out.dtype == torch.float32
    np.testing.assert_allclose(out.affine.numpy(), image.affine.numpy())
    expected = medgpu.decompress(path, codec=codec, device="cpu").array
    np.testing.assert_array_equal(out[0].numpy(), expected)
    # without an output: the stream's bytes
    compressor = T.CompressToMgpu(codec=codec, **OPTS)
    data = compressor(image)
    assert isinstance(data, bytes) and len(data) == compressor.last_report["bytes"]
    back = T.DecompressMgpu(codec=codec, device="cpu")(data)
    np.testing.assert_array_equal(back.numpy(), out[0].numpy())
    assert "filename_or_obj" not in back.meta


def test_compress_a_file_path(tmp_path, nifti, codec):
    path = T.CompressToMgpu(out_dir=tmp_path, codec=codec, **OPTS)(str(nifti))
    assert path == str(tmp_path / "ct.mgpu")
    vol = medgpu.decompress(path, codec=codec, device="cpu")
    assert vol.shape == SHAPE and vol.dtype == np.int16 and vol.source_format == "nifti"


def test_out_path_template(tmp_path, image, codec):
    c = T.CompressToMgpu(out_dir=tmp_path, out_path="{name}/{key}_q{quality}_{index}.mgpu", quality=5, codec=codec,
                         **OPTS)
    assert c(image, key="img") == str(tmp_path / "ct" / "img_q5_0.mgpu")
    assert c(np.zeros((8, 8, 3), np.int16)) == str(tmp_path / "image_1" / "_q5_1.mgpu")
    with pytest.raises(OptionError, match="template"):
        T.CompressToMgpu(out_path="{nope}.mgpu", codec=codec, **OPTS)(image)


def test_failed_compress_leaves_no_output_folder(tmp_path, codec):
    with pytest.raises(OptionError):
        T.CompressToMgpu(out_dir=tmp_path / "new" / "deeper", codec=codec, quality=99, **OPTS)(np.zeros((8, 8, 3)))
    assert list(tmp_path.iterdir()) == []


def test_output_folders_are_made_when_the_stream_is_written_not_before(tmp_path, image, codec, monkeypatch):
    """Two DataLoader workers write under one new folder; the first fails and removes the folder,
    still empty, while the second reads its input: the second still writes its stream (it makes
    the folder only when it starts writing)."""
    import medgpu.api as api

    out_dir = tmp_path / "new" / "deeper"
    read = api._read_volume

    def read_while_the_other_worker_cleans_up(src):
        if out_dir.exists():  # the other call's cleanup of the (empty) folders it made
            out_dir.rmdir()
            out_dir.parent.rmdir()
        return read(src)

    monkeypatch.setattr(api, "_read_volume", read_while_the_other_worker_cleans_up)
    path = T.CompressToMgpu(out_dir=out_dir, codec=codec, **OPTS)(image)
    assert path == str(out_dir / "ct.mgpu") and (out_dir / "ct.mgpu").stat().st_size > 0
    assert (out_dir / "ct.mgpu.json").is_file()


def test_compress_failing_while_writing_leaves_no_output_folder(tmp_path, image, codec, monkeypatch):
    import medgpu.api as api

    def fail(*args, **kwargs):
        raise RuntimeError("encoder failed")

    monkeypatch.setattr(api, "_encode_packets", fail)
    with pytest.raises(RuntimeError, match="encoder failed"):
        T.CompressToMgpu(out_dir=tmp_path / "new" / "deeper", codec=codec, **OPTS)(image)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["metatensor", "numpy", "torch", "two_channels"])
def test_round_trip_keeps_type_shape_dtype_and_meta(image, codec, kind):
    img: object = {
        "metatensor": image,
        "numpy": image[0].numpy().astype(np.int16),
        "torch": torch.as_tensor(image[0].numpy()),
        "two_channels": torch.cat([image, image * 0.5]),
    }[kind]
    rt = T.MgpuRoundTrip(codec=codec, **OPTS)
    out = rt(img)
    assert type(out) is type(img) and out.shape == img.shape and out.dtype == img.dtype
    data, _ = medgpu.compress_to_bytes(img, codec=codec, **OPTS)
    ref = medgpu.decompress(data, codec=codec, device="cpu").array  # same coding, done by hand
    got = np.asarray(out)
    if kind == "two_channels":
        got = np.moveaxis(got, 0, -1)
    elif kind == "metatensor":
        got = got[0]
    np.testing.assert_array_equal(got, ref)
    if isinstance(out, MetaTensor):
        np.testing.assert_array_equal(out.affine.numpy(), img.affine.numpy())
        assert out.meta["filename_or_obj"] == img.meta["filename_or_obj"]
        assert out.meta["mgpu_bits_per_voxel"] == rt.last_report["bits_per_voxel"]
        assert "mgpu_psnr" not in img.meta  # the input is left alone


# ------------------------------------------------------------------------------ dictionary forms


def test_dictionary_forms_round_trip_in_a_pipeline(tmp_path, nifti, codec):
    load = Compose([LoadImaged(keys=["image", "label"]), EnsureChannelFirstd(keys=["image", "label"])])
    pipeline = Compose([
        load,
        T.CompressToMgpud(keys=["image", "label"], out_dir=tmp_path, out_path="{name}_{key}.mgpu", codec=codec,
                          report_key_postfix="mgpu_report", **OPTS),
        T.DecompressMgpud(keys=["image", "label"], ensure_channel_first=True, codec=codec, device="cpu"),
    ])  # fmt: skip
    src = {"image": str(nifti), "label": str(nifti)}
    ref = load(dict(src))
    out = pipeline(dict(src))
    assert sorted(out) == ["image", "image_mgpu_report", "label", "label_mgpu_report"]
    assert (tmp_path / "ct_image.mgpu").is_file() and (tmp_path / "ct_label.mgpu").is_file()
    for key in ("image", "label"):
        assert out[key].shape == ref[key].shape
        np.testing.assert_allclose(out[key].affine.numpy(), ref[key].affine.numpy())
        assert out[key].meta["filename_or_obj"] == str(tmp_path / f"ct_{key}.mgpu")
        assert out[key].meta["mgpu_quality"] == out[f"{key}_mgpu_report"]["quality"]
        # NIfTI header fields that the stream does not hold come back from the carried meta dict
        np.testing.assert_array_equal(out[key].meta["dim"], ref[key].meta["dim"])


def test_round_trip_dictionary_form_and_plain_arrays_with_meta_dict(image, codec):
    rtd = T.MgpuRoundTripd(keys="image", codec=codec, **OPTS)
    out = Compose([rtd])({"image": image, "other": 1})
    assert out["other"] == 1 and isinstance(out["image"], MetaTensor) and out["image"].shape == image.shape
    arr = image[0].numpy()
    out = T.MgpuRoundTripd(keys="img", codec=codec, **OPTS)({"img": arr, "img_meta_dict": {"affine": AFFINE}})
    assert isinstance(out["img"], np.ndarray) and out["img"].shape == arr.shape


# ------------------------------------------------------------------------------ MONAI conventions


def test_aliases_and_base_classes():
    for name in ("CompressToMgpu", "DecompressMgpu", "MgpuRoundTrip"):
        d = getattr(T, f"{name}d")
        assert getattr(T, f"{name}D") is d and getattr(T, f"{name}Dict") is d and getattr(medgpu, f"{name}d") is d
        assert issubclass(d, MapTransform) and issubclass(getattr(T, name), Transform)
        assert getattr(medgpu, name) is getattr(T, name)


def test_allow_missing_keys(codec):
    data = {"image": np.zeros((8, 8, 3), np.float32)}
    with pytest.raises(KeyError):
        T.MgpuRoundTripd(keys=["image", "label"], codec=codec, **OPTS)(data)
    out = T.MgpuRoundTripd(keys=["image", "label"], allow_missing_keys=True, codec=codec, **OPTS)(data)
    assert sorted(out) == ["image"]
    with pytest.raises(KeyError):
        T.DecompressMgpud(keys="image", codec=codec)({})
    assert T.CompressToMgpud(keys="image", allow_missing_keys=True, codec=codec)({}) == {}


def test_transforms_pickle_for_dataloader_workers(codec):
    """Spawned DataLoader workers pickle transforms: a codec loaded on demand is not carried
    along (each worker loads its own)."""
    rt = T.MgpuRoundTripd(keys="image", quality=7, **OPTS)
    rt.round_trip._codecs._loaded[None] = codec  # as after a first call
    clone = pickle.loads(pickle.dumps(rt))
    assert clone.round_trip._codecs._loaded == {} and clone.round_trip.options == rt.round_trip.options
    assert clone.keys == ("image",)


def test_round_trip_with_shipped_weights_is_close(image):
    out = T.MgpuRoundTripd(keys="image", device="cpu")({"image": image})["image"]
    assert out.meta["mgpu_psnr"] > 30 and out.meta["mgpu_bits_per_voxel"] < 8
    err = (out - image).abs().max().item()
    assert err < float(image.max() - image.min()) / 4
