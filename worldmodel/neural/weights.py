"""Reading and writing the learned model's weights: a folder (or a Hugging Face hub repo) holding ``config.json``
and ``model.safetensors``. Only safetensors and JSON are read: weights are opened from strangers.

config.json keys: ``format`` (must be FORMAT), ``size`` ([width, height] the model was trained at),
``fov_y_deg``, ``widths``, ``emb_dim``, ``refine``, ``step_m`` and ``yaw_deg`` (the kinematics it was trained
with), ``max_depth`` (the fuse range of the caches it was trained on: a record for the reader, checked for range
only; a scene fuses to its own ``SceneConfig.max_depth``), and free-form ``training`` / ``eval`` records.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from worldmodel import checks
from worldmodel.neural.net import WorldModelNet

FORMAT = "worldstudio-neural-v1"
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"
DEFAULT_CONFIG = {"format": FORMAT, "size": [128, 128], "fov_y_deg": 70.0, "widths": [48, 96, 144, 192],
                  "emb_dim": 256, "refine": 32, "step_m": 0.5, "yaw_deg": 10.0, "max_depth": 60.0}
MAX_LEVELS, MAX_WIDTH = 6, 1024
INT_RANGES = {"emb_dim": (1, 4096), "refine": (1, 1024)}
REAL_RANGES = {"fov_y_deg": (1.0, 170.0), "step_m": (0.001, 10.0), "yaw_deg": (0.01, 180.0),  # (fov: the simulator's)
               "max_depth": (0.1, 1000.0), "context_noise": (0.0, 1.0)}


class WeightsError(ValueError):
    """Weights that cannot be used; the message says what to do."""


def build_net(config: dict) -> WorldModelNet:
    return WorldModelNet(tuple(config["widths"]), int(config["emb_dim"]), int(config["refine"]))


def check_config(config: dict, where: str, fix: str = "use the config the weights were saved with") -> dict:
    """Fill defaults and validate types/ranges of a config read from ``where``; raise WeightsError (its message
    ends with ``fix``, what to do)."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise WeightsError(f"{where}: not a WorldStudio neural model config (format must be {FORMAT!r}); "
                           "point at a folder written by save_pretrained or `launch.py train`")
    cfg = {**DEFAULT_CONFIG, **config}
    for key in ("size", "widths"):
        if not isinstance(cfg[key], (list, tuple)):  # (a text would be checked one character at a time)
            raise WeightsError(f"{where}: {key} must be a list of whole numbers, got {checks.short(cfg[key])}; "
                               "re-export the model with save_pretrained")
    try:  # each number's type and range; how they fit together below
        size = [checks.number(v, "each side of size", 16, 1024, integer=True) for v in cfg["size"]]
        widths = [checks.number(v, "each of widths", 8, MAX_WIDTH, integer=True) for v in cfg["widths"]]
        for key, (low, high) in INT_RANGES.items():
            cfg[key] = checks.number(cfg[key], key, low, high, integer=True)
        for key, (low, high) in REAL_RANGES.items():
            if key in cfg:  # context_noise is optional
                cfg[key] = checks.number(cfg[key], key, low, high)
    except checks.CheckError as e:
        raise WeightsError(f"{where}: {e}; {fix}") from None
    cfg["size"], cfg["widths"] = size, widths  # as ints: 48.0 would reach the network's layers as a float
    if len(size) != 2 or any(s % 16 for s in size):
        raise WeightsError(f"{where}: size {size} is unsupported (each side a multiple of 16, 16..1024)")
    if not 2 <= len(widths) <= MAX_LEVELS or any(w % 8 for w in widths):
        raise WeightsError(f"{where}: widths {widths} are unsupported (2..{MAX_LEVELS} levels, each a multiple of 8 "
                           f"in 8..{MAX_WIDTH}); {fix}")
    if any(side // 2 % 2 ** (len(widths) - 1) or side // 2 // 2 ** (len(widths) - 1) < 2 for side in size):
        raise WeightsError(f"{where}: size {size} cannot be halved {len(widths) - 1} times below the stem to 2 "
                           "pixels or more; use fewer widths or a size that divides")
    for record in ("training", "eval"):  # free-form, but read by the model card, ship and fine-tuning
        if not isinstance(cfg.get(record) or {}, dict):
            raise WeightsError(f"{where}: {record} must be an object; re-export the model with save_pretrained")
    training = cfg.get("training") or {}
    for key in ("config", "init"):  # what learn.ship and `train --init` read from it
        if not isinstance(training.get(key) or {}, dict):
            raise WeightsError(f"{where}: training.{key} must be an object; re-export the model with save_pretrained")
    for key in ("steps", "minutes_trained"):
        value = training.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise WeightsError(f"{where}: training.{key} must be a number, got {checks.short(value)}; re-export the "
                               "model with save_pretrained")
    return cfg


def resolve(path_or_repo_id: str | os.PathLike) -> Path:
    """A local folder as is; anything else is a hub repo id fetched (or found in the cache) by huggingface_hub."""
    local = Path(path_or_repo_id).expanduser()
    if local.is_dir():
        return local
    text = str(path_or_repo_id)
    if local.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise WeightsError(f"{text}: no such model folder (expected a folder with {CONFIG_NAME} and {WEIGHTS_NAME}, "
                           "or a hub repo id like 'owner/name')")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME]))
    except Exception as e:  # offline and not cached, unknown repo, ...
        raise WeightsError(f"{text}: no such local folder, and no hub model of that id could be fetched "
                           f"({type(e).__name__}); check the path, or download the hub model once with network "
                           "access (it is cached afterwards)") from None


def load_config(path_or_repo_id: str | os.PathLike) -> dict:
    """The checked config.json of a model folder or hub repo (weights not read). Raises WeightsError."""
    folder = resolve(path_or_repo_id)
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not cfg_path.is_file() or not w_path.is_file():
        raise WeightsError(f"{folder}: needs {CONFIG_NAME} and {WEIGHTS_NAME}; re-export with save_pretrained")
    try:
        config = json.loads(cfg_path.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise WeightsError(f"{cfg_path}: not valid JSON ({type(e).__name__}); re-export the model") from None
    return check_config(config, str(cfg_path))


def load_pretrained(path_or_repo_id: str | os.PathLike) -> tuple[dict, WorldModelNet]:
    """-> (config, network with the weights loaded, eval mode). Raises WeightsError with what to do."""
    folder = resolve(path_or_repo_id)
    config, w_path = load_config(folder), folder / WEIGHTS_NAME
    try:
        state = load_file(str(w_path))
    except Exception as e:  # safetensors raises its own error types for truncated / lying files
        raise WeightsError(f"{w_path}: corrupt weights file ({e}); download or re-export it") from None
    integral = sorted(k for k, v in state.items() if not v.is_floating_point())
    if integral:
        raise WeightsError(f"{w_path}: tensor {integral[0]} is {state[integral[0]].dtype}, not floating point; the "
                           "file is not this model's weights, re-export it")
    with torch.device("meta"):  # shapes only: a config that lies about the sizes allocates nothing
        expected = build_net(config).state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or extra or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                  else f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, config says "
                       f"{tuple(expected[wrong[0]].shape)}")
        raise WeightsError(f"{w_path}: weights do not match {CONFIG_NAME} ({detail}); use the config the weights "
                           "were saved with")
    state = {k: v.float() for k, v in state.items()}
    for k, v in state.items():
        if not torch.isfinite(v).all():
            raise WeightsError(f"{w_path}: tensor {k} holds NaN or inf; the file is damaged, re-export it")
    with torch.device("meta"):  # no random init to overwrite: the loaded tensors become the parameters
        net = build_net(config)
    net.load_state_dict(state, assign=True)
    return config, net.eval()


def basic_card(config: dict, net: WorldModelNet) -> str:
    """A short model card from what the config records (``learn.ship`` writes the full one, with the eval)."""
    training = config.get("training") or {}
    lines = [f"# WorldStudio neural world model ({config['size'][0]}x{config['size'][1]})", "",
             "Predicts the next frame's RGB, z-depth, per-pixel confidence and camera pose from the last frame, an "
             "action or target pose and the map's cache render (see WorldStudio's README, *The learned world model*).",
             "", f"- Architecture: FiLM U-Net, {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters, "
             f"widths {list(config['widths'])}, trained with steps of {config['step_m']} m / {config['yaw_deg']} deg.",
             f"- Training: {training.get('steps', '?')} steps; {training.get('hardware', '?')}; "
             f"{training.get('minutes_trained', '?')} minutes."]
    evaluation = config.get("eval") or {}
    if evaluation:
        lines += ["", "| eval metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in evaluation.items() if isinstance(v, (int, float))]
    return "\n".join(lines) + "\n"


def save_pretrained(folder: str | os.PathLike, config: dict, net: WorldModelNet, card: str | None = None,
                    half: bool = True) -> Path:
    """Write config.json, model.safetensors (fp16 when ``half``) and a model card (``card``, else
    :func:`basic_card`); atomic per file."""
    checked = check_config(config, "config")  # a bad config leaves no folder behind
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    state = {k: v.detach().to(dtype).contiguous() for k, v in net.state_dict().items()}
    files = {WEIGHTS_NAME: lambda p: save_file(state, str(p), metadata={"format": FORMAT}),
             CONFIG_NAME: lambda p: p.write_text(json.dumps(checked, indent=2, allow_nan=False) + "\n")}
    card_text = basic_card(checked, net) if card is None else card
    files[CARD_NAME] = lambda p: p.write_text(card_text)
    temps = {name: folder / f".{name}.tmp{os.getpid()}" for name in files}
    try:  # every file is written before any replaces its old one: a failure leaves the folder as it was
        for name, write in files.items():
            os.close(os.open(temps[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))  # the usual mode: 0o666
            mode = os.stat(temps[name]).st_mode & 0o777  # less the umask
            write(temps[name])
            os.chmod(temps[name], mode)  # (safetensors writes 0o600: weights that others could not load)
        for name, tmp in temps.items():
            os.replace(tmp, folder / name)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return folder
