"""Fit to the hardware (shala.launch.fit): preflight's verdict and fallback on the
GPUs users have, and what training applies (settings, DeepSpeed json, the
environment accelerate reads)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from shala.cli import main
from shala.errors import ConfigError
from shala.launch.fit import DS_CONFIG_NAME, DS_ENV, FALLBACKS, fit_to_hardware
from shala.launch.gpu_memory import GIB
from shala.launch.launch_check import accelerate_launch_env

ROOT = Path(__file__).resolve().parents[2]
ACC = "config/accelerate_zero3.yaml"


def by_hand(shape, n, gather=True, opt=False, param=False):
    """The paper's GRPO setup per GPU in GiB, written out from the memory
    model's formulas (shala.launch.gpu_memory and zero3_memory docs), not from
    its code: ZeRO-3 on n GPUs, towers frozen, 4 completions x (512 + 128)
    tokens, 2 micro-batches per generation, activation checkpointing, 3 GiB
    overhead, config/ds_zero3.json's sub_group_size 1e8, max live parameters
    5e8 and "auto" prefetch; the peak is static + the largest phase."""
    P, T = shape.total, shape.groups["text"]
    L, h, i, kv, hd, vocab = 28, 3584, 18944, 4, 128, 152064
    assert (shape.layers, shape.hidden, shape.intermediate, shape.kv_heads, shape.head_dim) == (L, h, i, kv, hd)
    largest = vocab * h                                  # embed_tokens and lm_head
    assert shape.vocab == vocab and shape.largest == largest
    weights = 0 if param else 2 * P / n
    optimizer = 0 if opt else 12 * T / n
    gradients = 0 if opt else 2 * T / n                  # ZeRO-3 offload keeps them on the host
    static = weights + optimizer + gradients + 3 * GIB
    live = 2 * max(5e8, largest + int(0.9 * h * h))
    generation = (2 * P if gather else live) + 8 * 640 * L * 2 * kv * hd * 2 + 8 * 512 * 2 * (2 * h + 3 * i)
    forward = 4 * 640 * 2 * (2 * L * h + 12 * h + 4 * i) + live
    step = 0 if opt else 8 * min(T / n, 1e8 + largest / n)
    return (static + max(generation, forward, step)) / GIB


# The documented order (shala.launch.fit module doc), as by_hand's switches.
ORDER = [("no_gather", {"gather": False}), ("offload_optimizer", {"opt": True}),
         ("offload_optimizer+no_gather", {"opt": True, "gather": False}),
         ("offload_param", {"opt": True, "param": True}),
         ("offload_param+no_gather", {"opt": True, "param": True, "gather": False})]


def expected(shape, n, mem):
    """(fallback or None, its GiB): the first that leaves 10 % of mem free."""
    if by_hand(shape, n) <= 0.9 * mem:
        return None, by_hand(shape, n)
    for name, kw in ORDER:
        if by_hand(shape, n, **kw) <= 0.9 * mem:
            return name, by_hand(shape, n, **kw)
    return "nothing", None


def test_documented_order_is_the_code_order():
    assert [fb.name for fb in FALLBACKS] == [name for name, _ in ORDER]


def _preflight(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(["preflight", "--config", str(ROOT / "config.yaml"), "--free-disk", "100000", *args])
        raise SystemExit(0)
    return exc.value.code or 0, capsys.readouterr().out


# GiB as torch reports each card (total_memory / 2^30): H100-80GB ~79.2, H200 ~139.8,
# a 48 GB card (RTX A6000 / A40) ~47.4, a 24 GB card (RTX 4090 / A10) ~23.6.
HARDWARE = [(2, 79.2, "no_gather"), (2, 139.8, None), (4, 47.4, "no_gather"), (8, 23.6, "no_gather"),
            # the ladder further down, on fewer GPUs
            (2, 47.4, "offload_optimizer"), (2, 23.6, "offload_optimizer+no_gather"),
            (2, 15.0, "offload_param+no_gather")]


@pytest.mark.parametrize("gpus,mem,want", HARDWARE)
def test_preflight_verdict_and_fallback(in_repo, capsys, omni_shape, gpus, mem, want):
    name, gib = expected(omni_shape, gpus, mem)
    assert name == want                                   # the by-hand model agrees with the table
    rc, out = _preflight(capsys, "--gpus", str(gpus), "--gpu-mem", str(mem))
    assert rc == 0, out
    if want is None:
        assert "verdict: FITS:" in out and "fit: none needed" in out
        assert f"{gib:.1f} of {mem:.1f} GiB per GPU" in out
    else:
        n = [f for f, _ in ORDER].index(want) + 1
        assert "verdict: FITS WITH A FALLBACK" in out
        assert f"training applies fallback {n} {want} (" in out
        assert f"{gib:.1f} of {mem:.1f} GiB per GPU x {gpus}" in out


def test_strict_exits_3_on_80gb(in_repo, capsys, tmp_path):
    rc, out = _preflight(capsys, "--gpus", "2", "--gpu-mem", "79.2", "--strict")
    assert rc == 3 and "training.fit_to_hardware is strict" in out
    assert "fallback would apply fallback 1 no_gather" in out
    over = tmp_path / "strict.yaml"
    over.write_text(yaml.safe_dump({"training": {"fit_to_hardware": "strict"}}))
    rc, out = _preflight(capsys, "--config", str(over), "--gpus", "2", "--gpu-mem", "79.2")
    assert rc == 3, out


def test_tight_is_not_a_fit(in_repo, capsys, omni_shape):
    """78.4 of 80 GiB leaves 1.6 GiB: under 10 %, so the fallback applies (strict: exit 3)."""
    gib = by_hand(omni_shape, 2)
    assert 80 * 0.9 < gib < 80
    rc, out = _preflight(capsys, "--gpus", "2", "--gpu-mem", "80")
    assert rc == 0 and f"tight: {80 - gib:.1f} GiB headroom" in out and "fallback 1 no_gather" in out
    rc, out = _preflight(capsys, "--gpus", "2", "--gpu-mem", "80", "--strict")
    assert rc == 3


# ------------------------------------------------------ fit_to_hardware

def grpo_settings_of(config):
    return dict(config["training"]["grpo"])


@pytest.fixture
def launched(in_repo, monkeypatch):
    """This process as `accelerate launch --config_file config/accelerate_zero3.yaml
    --num_processes N` starts it: the launcher's own environment (accelerate's code)."""
    def launch(gpus, mem):
        _, env, _ = accelerate_launch_env(ACC, gpus)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("WORLD_SIZE", str(gpus))
        monkeypatch.setattr("shala.launch.fit.detect_cuda", lambda: (gpus, mem, "test GPU"))
        return env
    return launch


def test_no_cuda_changes_nothing(paper_config, tmp_path, monkeypatch):
    monkeypatch.setattr("shala.launch.fit.detect_cuda", lambda: None)
    settings = grpo_settings_of(paper_config)
    assert fit_to_hardware(paper_config, settings, tmp_path) == (settings, [], None)
    assert not (tmp_path / DS_CONFIG_NAME).exists()


def test_fits_as_configured_on_141gb(paper_config, launched, tmp_path, omni_shape):
    env = launched(2, 139.8)
    settings = grpo_settings_of(paper_config)
    got, notes, record = fit_to_hardware(paper_config, settings, tmp_path)
    assert got == settings and record["fallback"] is None and record["fits"]
    assert record["estimate_gib"] == record["configured_gib"] == pytest.approx(by_hand(omni_shape, 2), abs=0.01)
    assert "fits as configured" in notes[0]
    assert os.environ[DS_ENV] == env[DS_ENV] == "config/ds_zero3.json"
    json.dumps(record)                                          # JSON-safe for run.json


def test_no_gather_on_80gb(paper_config, launched, tmp_path, omni_shape):
    env = launched(2, 79.2)
    got, notes, record = fit_to_hardware(paper_config, grpo_settings_of(paper_config), tmp_path)
    assert got["ds3_gather_for_generation"] is False
    assert record["fallback"] == "no_gather" and record["gpus"] == 2 and record["gpu_mem_gib"] == 79.2
    assert record["estimate_gib"] == pytest.approx(by_hand(omni_shape, 2, gather=False), abs=0.01)
    assert "fallback 1 no_gather" in notes[0]
    assert os.environ[DS_ENV] == env[DS_ENV] and not (tmp_path / DS_CONFIG_NAME).exists()


def test_offload_writes_the_json_and_accelerate_reads_it(paper_config, launched, tmp_path):
    """2 x 48 GB: optimizer offload. The copy says cpu, and DeepSpeedPlugin(),
    built from the environment as TrainingArguments does under accelerate
    launch, takes the offload (and DeepSpeed's AdamW) from it."""
    launched(2, 47.4)
    got, notes, record = fit_to_hardware(paper_config, grpo_settings_of(paper_config), tmp_path)
    assert record["fallback"] == "offload_optimizer" and "ds3_gather_for_generation" not in got
    ds_path = tmp_path / DS_CONFIG_NAME
    ds = json.loads(ds_path.read_text())
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_optimization"]["offload_param"]["device"] == "none"
    assert ds["optimizer"]["type"] == "AdamW" and set(ds["optimizer"]["params"].values()) == {"auto"}
    original = json.loads((ROOT / "config/ds_zero3.json").read_text())
    assert {k: v for k, v in ds.items() if k not in ("zero_optimization", "optimizer")} == \
        {k: v for k, v in original.items() if k != "zero_optimization"}
    assert os.environ[DS_ENV] == str(ds_path.resolve()) == record["ds_config"]

    from accelerate.utils import DeepSpeedPlugin
    plugin = DeepSpeedPlugin()
    assert plugin.offload_optimizer_device == "cpu" and plugin.offload_param_device == "none"
    assert plugin.deepspeed_config["optimizer"]["type"] == "AdamW"


def test_parameter_offload_on_2x15(paper_config, launched, tmp_path):
    launched(2, 15.0)
    got, _, record = fit_to_hardware(paper_config, grpo_settings_of(paper_config), tmp_path)
    assert record["fallback"] == "offload_param+no_gather" and got["ds3_gather_for_generation"] is False
    from accelerate.utils import DeepSpeedPlugin
    plugin = DeepSpeedPlugin()
    assert (plugin.offload_optimizer_device, plugin.offload_param_device) == ("cpu", "cpu")


def test_sft_skips_the_gather_fallbacks(paper_config, launched, tmp_path, omni_shape):
    """SFT settings (no num_generations) do not generate: no gather, no KV
    cache; at 2 x 48 the optimizer offload is its first fallback."""
    from shala.train.sft import sft_settings
    launched(2, 47.4)
    settings = sft_settings(paper_config, "sft_soft")
    assert "num_generations" not in settings
    got, _, record = fit_to_hardware(paper_config, settings, tmp_path)
    assert record["fallback"] == "offload_optimizer" and "ds3_gather_for_generation" not in got
    assert [name for name, _ in record["tried"]] == ["offload_optimizer"]


def test_strict_raises_and_nothing_fitting_raises(paper_config, launched, tmp_path, omni_shape):
    launched(2, 79.2)
    strict = {**paper_config, "training": {**paper_config["training"], "fit_to_hardware": "strict"}}
    with pytest.raises(ConfigError, match="strict"):
        fit_to_hardware(strict, grpo_settings_of(paper_config), tmp_path)
    launched(2, 4.0)                                        # offload_param+no_gather needs 5.6
    no_gather = f"{by_hand(omni_shape, 2, gather=False):.1f}"
    with pytest.raises(ConfigError, match=f"does not fit 2 x test GPU .*no_gather {no_gather} GiB"):
        fit_to_hardware(paper_config, grpo_settings_of(paper_config), tmp_path)
    off = {**paper_config, "training": {**paper_config["training"], "fit_to_hardware": "off"}}
    settings = grpo_settings_of(paper_config)
    got, _, record = fit_to_hardware(off, settings, tmp_path)
    assert got == settings and record == {"checked": False, "mode": "off", "reason": "training.fit_to_hardware off"}


def test_without_a_launcher_nothing_applies(in_repo, paper_config, tmp_path, monkeypatch):
    """Plain `shala train` on one GPU (no DeepSpeed): 147.8 GiB, no fallback applies."""
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    monkeypatch.setattr("shala.launch.fit.detect_cuda", lambda: (1, 79.2, "test GPU"))
    with pytest.raises(ConfigError, match="does not fit 1 x test GPU"):
        fit_to_hardware(paper_config, grpo_settings_of(paper_config), tmp_path)
