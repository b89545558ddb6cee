"""Many paintings in one network (nn/model.py's conditional instance norm, nn/styles.py): the
one-style case is the seed's network, slots are independent, blends interpolate gamma and
beta, model files keep each style's name, and the commands choose, blend and name outputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from reference import RefTransformerNet, calibrated_model

from conftest import PYTHON, REPO
from stylekit.errors import ConfigError, StylekitError
from stylekit.infer import sheet
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.infer.options import StyleChoice, blend_label, parse_blend
from stylekit.infer.selection import choose, per_style
from stylekit.nn import styles, zoo
from stylekit.nn.model import TransformerNet
from stylekit.nn.modelio import load_model, load_model_bytes, model_bytes, save_model, style_entries

NAMES = ("starry_night", "wave", "the_scream")


def multi_style(n: int = 3, seed: int = 0) -> TransformerNet:
    """A calibrated network (output spanning 0-255) whose n slots hold different gamma/beta."""
    base = calibrated_model(seed)
    net = styles.grow(base, n - 1)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, norm in styles.norms(net):
            norm.weight[1:].mul_(0.6 + 0.8 * torch.rand(norm.weight[1:].shape, generator=gen))
            norm.bias[1:].add_(0.3 * torch.randn(norm.bias[1:].shape, generator=gen))
    return net


def photo(h: int = 36, w: int = 44, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(0, 255, (1, 3, h, w)).astype(np.float32))


@pytest.fixture(scope="module")
def multi_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("multi") / "three.safetensors"
    entries = [{"name": n, "painting": f"/paintings/{n}.jpg", "digest": "0" * 16} for n in NAMES]
    save_model(
        str(path), multi_style(), {"format": "stylekit", "task": "style", "styles": json.dumps(entries)}
    )
    return path


# --- the network ------------------------------------------------------------------------------


def test_one_style_is_the_seeds_network_bit_for_bit() -> None:
    torch.manual_seed(0)
    seed = RefTransformerNet().eval()
    ours = TransformerNet().eval()
    ours.load_state_dict(seed.state_dict(), strict=True)
    with torch.no_grad():
        for m in list(seed.modules()) + list(ours.modules()):
            if isinstance(m, torch.nn.InstanceNorm2d):
                m.weight.normal_(1, 0.2, generator=torch.Generator().manual_seed(3))
        x = photo(64, 48)
        assert torch.equal(ours(x), seed(x))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in seed.state_dict().items()
    }


def test_slots_are_independent_and_share_every_convolution() -> None:
    net = multi_style()
    x = photo()
    with torch.no_grad():
        outs = [net(x, k) for k in range(3)]
        assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])
        # Changing slot 1 changes only slot 1's pixels.
        for _, norm in styles.norms(net):
            norm.weight[1].mul_(1.5)
        assert torch.equal(net(x, 0), outs[0]) and torch.equal(net(x, 2), outs[2])
        assert not torch.equal(net(x, 1), outs[1])
    assert sum(p.numel() for n, p in net.named_parameters() if styles.is_norm_key(net, n)) == 3 * 3200
    with pytest.raises(ValueError, match="needs a style"):
        net(x)


def test_one_style_and_blends_are_the_slots_and_their_interpolated_gamma_beta() -> None:
    net = multi_style()
    x = photo()
    with torch.no_grad():
        single = styles.one_style(net, [0.0, 1.0, 0.0])
        assert single.styles == 1 and torch.equal(single(x), net(x, 1))
        w = torch.tensor([0.7, 0.0, 0.3])
        blend = styles.one_style(net, w.tolist())
        assert torch.equal(blend(x), net(x, w))
        for name, norm in styles.norms(blend):
            source = dict(styles.norms(net))[name]
            torch.testing.assert_close(norm.weight[0], 0.7 * source.weight[0] + 0.3 * source.weight[2])
            torch.testing.assert_close(norm.bias[0], 0.7 * source.bias[0] + 0.3 * source.bias[2])
    with pytest.raises(ValueError, match="2 style weights"):
        styles.one_style(net, [0.5, 0.5])


def test_new_slots_train_only_gamma_beta_and_join_after_the_old_ones_bit_for_bit() -> None:
    base = multi_style(2)
    added = styles.frozen_start(base, 1)
    trained = [n for n, p in added.named_parameters() if p.requires_grad]
    assert trained and all(styles.is_norm_key(added, n) for n in trained)
    with torch.no_grad():
        for _, norm in styles.norms(added):
            norm.bias.add_(0.1)
    joined = styles.join(base, added)
    x = photo()
    with torch.no_grad():
        assert joined.styles == 3
        assert torch.equal(joined(x, 0), base(x, 0)) and torch.equal(joined(x, 1), base(x, 1))
        assert torch.equal(joined(x, 2), added(x))
    other = styles.frozen_start(multi_style(2, seed=5), 1)
    with pytest.raises(ValueError, match="other convolutions"):
        styles.join(base, other)


# --- model files ------------------------------------------------------------------------------


def test_a_multi_style_file_round_trips_with_each_styles_metadata(multi_file: Path) -> None:
    loaded = load_model(str(multi_file))
    assert loaded.styles == NAMES and loaded.model.styles == 3
    assert [e["painting"] for e in style_entries(loaded.metadata)] == [f"/paintings/{n}.jpg" for n in NAMES]
    again = load_model_bytes(model_bytes(loaded.model, loaded.metadata))
    for a, b in zip(loaded.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert again.styles == NAMES


def test_a_one_style_file_is_named_by_its_style_and_a_miscounted_file_is_refused(tmp_path: Path) -> None:
    data = model_bytes(calibrated_model(), {"style": "/x/candy.jpg"})
    assert load_model_bytes(data).styles == ("candy",)
    bad = model_bytes(multi_style(2), {"styles": json.dumps([{"name": "a"}])})
    with pytest.raises(StylekitError, match="names 1 styles but holds 2"):
        load_model_bytes(bad, name="m")


def test_a_shipped_name_may_be_one_style_of_a_multi_style_file(
    multi_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "three.safetensors").write_bytes(multi_file.read_bytes())
    zoo.write_index(tmp_path)
    monkeypatch.setattr(zoo, "models_dir", lambda: tmp_path)
    zoo.index.cache_clear()
    try:
        assert zoo.index()["wave"]["style"] == "wave" and "style" not in zoo.index()["three"]
        wave = load_model("wave")
        whole = load_model("three")
        assert wave.styles == ("wave",) and wave.model.styles == 1 and wave.digest != whole.digest
        x = photo()
        with torch.no_grad():
            assert torch.equal(wave.model(x), whole.model(x, 1))
    finally:
        zoo.index.cache_clear()


# --- choosing styles --------------------------------------------------------------------------


def test_style_selections_parse_with_weights_labels_and_one_line_errors() -> None:
    assert parse_blend("wave") == (("wave", 1.0),)
    assert parse_blend("a:0.7+b:0.3") == (("a", 0.7), ("b", 0.3))
    assert parse_blend("a+b") == (("a", 0.5), ("b", 0.5))
    assert [blend_label(b) for b in StyleChoice("a,a:0.7+b:0.3").blends] == ["a", "a=0.7+b=0.3"]
    for text, message in (
        ("a:0.7+b:0.5", "sum to 1.2"),
        ("a:0.5", "single style takes no weight"),
        ("a:0.7+b", "every style in the blend a weight"),
        ("a:x+b:0.5", "not a number"),
        ("a:-0.5+b:1.5", "positive"),
        ("a+a", "appears twice"),
        ("a,,b", "name is missing"),
        ("a,a", "chosen twice"),
    ):
        with pytest.raises(ConfigError, match=message):
            StyleChoice(text)


def test_choose_resolves_names_and_refuses_what_the_model_does_not_hold(multi_file: Path) -> None:
    loaded = load_model(str(multi_file))
    chosen = choose(loaded, StyleChoice("wave,starry_night:0.25+the_scream:0.75"), "three")
    assert [c.label for c in chosen] == ["wave", "starry_night=0.25+the_scream=0.75"]
    assert [c.weights for c in chosen] == [(0.0, 1.0, 0.0), (0.25, 0.0, 0.75)]
    with pytest.raises(StylekitError, match="did you mean wave"):
        choose(loaded, StyleChoice("wav"), "three")
    with pytest.raises(StylekitError, match=r"holds 3 styles .*choose with --style"):
        choose(loaded, StyleChoice(), "three")
    with pytest.raises(ConfigError, match="holds 3 styles"):
        Stylizer(loaded.model, InferenceOptions(device="cpu"))
    one = load_model_bytes(model_bytes(calibrated_model(), {"style_name": "candy"}))
    assert choose(one, StyleChoice("candy"), "c")[0].model is one.model
    with pytest.raises(StylekitError, match="one-style model of candy; leave --style out"):
        choose(one, StyleChoice("wave"), "c")
    assert per_style("out/photo.jpg", "wave") == "out/wave/photo.jpg"
    assert per_style("s3://b/o.png", "a=0.5+b=0.5") == "s3://b/a=0.5+b=0.5/o.png"
    assert per_style("o.png", "wave") == "wave/o.png"


def test_the_fast_path_paints_a_chosen_style_or_blend_as_the_network_does(multi_file: Path) -> None:
    loaded = load_model(str(multi_file))
    img = np.random.default_rng(1).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    for chosen in choose(loaded, StyleChoice("the_scream,wave:0.5+the_scream:0.5"), "three"):
        (fast,) = Stylizer(chosen.model, InferenceOptions(device="cpu")).stylize([img])
        with torch.no_grad():
            slow = loaded.model(x, torch.tensor(chosen.weights)).clamp(0, 255).to(torch.uint8)[0]
        assert np.abs(fast.astype(int) - slow.permute(1, 2, 0).numpy().astype(int)).max() <= 2


# --- the commands -----------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stylekit", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_stylize_writes_one_output_per_style_in_a_folder_named_after_it(
    multi_file: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(2)
    inputs = []
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(tmp_path / name)
        inputs.append(str(tmp_path / name))
    out = tmp_path / "out"
    result = run_cli("stylize", "--model", str(multi_file), "--style", "wave,wave:0.4+the_scream:0.6",
                     "--output", str(out), *inputs)  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == [
        "wave/a.png",
        "wave/b.png",
        "wave=0.4+the_scream=0.6/a.png",
        "wave=0.4+the_scream=0.6/b.png",
    ]
    loaded = load_model(str(multi_file))
    (chosen,) = choose(loaded, StyleChoice("wave"), "three")
    expected = Stylizer(chosen.model, InferenceOptions(device="cpu")).stylize(
        [np.asarray(Image.open(inputs[0]))]
    )[0]
    assert np.array_equal(np.asarray(Image.open(out / "wave" / "a.png")), expected)
    # One style of a multi-style model, one input: --output is the file, as for any model.
    one = tmp_path / "one.png"
    result = run_cli("stylize", "--model", str(multi_file), "--style", "wave", "--strength", "0.5",
                     "--preserve-color", "--output", str(one), inputs[0])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert one.is_file()


@pytest.mark.parametrize(
    ("style", "message"),
    [
        (None, "holds 3 styles (starry_night, wave, the_scream): choose with --style"),
        ("wavy", "holds no style 'wavy'; did you mean wave"),
        ("wave:0.6+the_scream:0.6", "the weights sum to 1.2; make them sum to 1"),
    ],
)
def test_bad_selections_are_one_line_errors(
    multi_file: Path, tmp_path: Path, style: str | None, message: str
) -> None:
    src = tmp_path / "p.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(src)
    flags = [] if style is None else ["--style", style]
    result = run_cli(
        "stylize", "--model", str(multi_file), *flags, "--output", str(tmp_path / "o.png"), str(src)
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr


def test_a_style_flag_naming_another_painting_on_a_shipped_one_style_model_says_what_to_do(
    tmp_path: Path,
) -> None:
    src = tmp_path / "p.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(src)
    result = run_cli(
        "stylize", "--model", "starry_night", "--style", "wave", "--output", str(tmp_path / "o.png"), str(src)
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1
    assert "one-style model of starry_night" in lines[0] and "--model wave" in lines[0]


def test_sheet_has_a_row_per_selection(multi_file: Path, tmp_path: Path) -> None:
    src = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(src)
    out = tmp_path / "sheet.png"
    result = run_cli("sheet", "--model", str(multi_file), "--style", "wave,wave:0.5+the_scream:0.5,the_scream",
                     "--cell", "64", "--output", str(out), str(src))  # fmt: skip
    assert result.returncode == 0, result.stderr
    one_row = run_cli("sheet", "--model", str(multi_file), "--style", "wave", "--cell", "64", "--output",
                      str(tmp_path / "one.png"), str(src))  # fmt: skip
    assert one_row.returncode == 0, one_row.stderr
    rows_height = np.asarray(Image.open(out)).shape[0] - np.asarray(Image.open(tmp_path / "one.png")).shape[0]
    assert rows_height == 2 * (64 + sheet.GAP)  # two more rows of 64 px cells


def test_onnx_export_takes_the_style_weights_and_gives_stylekits_pixels(
    multi_file: Path, tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime")
    from stylekit.infer.srmetrics import psnr

    out = tmp_path / "three.onnx"
    result = run_cli("export", "--model", str(multi_file), "--output", str(out))
    assert result.returncode == 0, result.stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "style"]
    meta = session.get_modelmeta().custom_metadata_map
    assert "starry_night, wave, the_scream" in meta["style_input"]
    loaded = load_model(str(multi_file))
    img = np.random.default_rng(4).integers(0, 256, (38, 53, 3), dtype=np.uint8)
    for text in ("wave", "starry_night:0.3+the_scream:0.7"):
        (chosen,) = choose(loaded, StyleChoice(text), "three")
        (ours,) = Stylizer(chosen.model, InferenceOptions(device="cpu")).stylize([img])
        x = np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)
        (y,) = session.run(None, {"image": x, "style": np.array(chosen.weights, np.float32)})
        theirs = np.clip(y, 0, 255).astype(np.uint8)[0].transpose(1, 2, 0)
        assert psnr(theirs, ours) > 40, text
    one = tmp_path / "wave.onnx"
    result = run_cli("export", "--model", str(multi_file), "--style", "wave", "--output", str(one))
    assert result.returncode == 0, result.stderr
    assert [i.name for i in ort.InferenceSession(str(one)).get_inputs()] == ["image"]
    result = run_cli("export", "--model", str(multi_file), "--style", "wave,the_scream", "--output", str(one))
    assert result.returncode != 0 and "an export is one graph" in result.stderr


def test_video_writes_one_video_per_style_in_a_folder_named_after_it(
    multi_file: Path, tmp_path: Path
) -> None:
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    from stylekit.video.synthetic import moving_scene, write_clip

    clip = tmp_path / "clip.mp4"
    scene = np.random.default_rng(6).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    write_clip(str(clip), moving_scene(scene, 48, 32, 4), 8)
    out = tmp_path / "out" / "styled.mp4"
    result = run_cli(
        "video", "--model", str(multi_file), "--style", "wave,the_scream", "--output", str(out), str(clip)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "out" / s / "styled.mp4") for s in ("wave", "the_scream")]
    assert all(Path(p).stat().st_size > 0 for p in result.stdout.split())


def test_sheet_labels_wrap_a_blend_after_its_parts() -> None:
    from PIL import Image as PILImage
    from PIL import ImageDraw

    draw = ImageDraw.Draw(PILImage.new("RGB", (10, 10)))
    font = sheet.label_font(18)
    lines = sheet.wrap_text(draw, "wave=0.75+starry_night=0.25", font, 200)
    assert lines == ["wave=0.75+", "starry_night=0.25"]
    assert sheet.wrap_text(draw, "wave", font, 200) == ["wave"]
    long = sheet.wrap_text(draw, "+".join(["style_a=0.1"] * 10), font, 200)
    assert len(long) == sheet.MAX_LABEL_LINES and long[-1].endswith("…")
    assert all(draw.textlength(line, font=font) <= 200 for line in long)
