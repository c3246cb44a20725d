"""Turn a training checkpoint into shipped weights: fp16 ``model.safetensors``, ``config.json`` (with the
training record and eval figures) and a model card.

    python -m learn.ship runs/neural worldmodel/neural/pretrained --eval eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from learn.evaluate import format_table
from learn.train import trained_minutes
from scenes.atomic import WriteError, json_safe, write_error
from worldmodel.neural.weights import WeightsError, load_pretrained, save_pretrained

CARD = """# WorldStudio neural world model ({size}x{size})

A DeepVerse-style 4D world model: from the last frame, an action (or any target pose) and geometry retrieved
from memory it predicts the next frame's **RGB, z-depth, per-pixel confidence and camera pose**. It runs live on
a 2-core laptop CPU inside WorldStudio (`python launch.py`).

- **Architecture**: FiLM-conditioned U-Net ({params:.1f}M parameters, pixel-unshuffle stem, widths {widths})
  over 22 input channels: last frame (RGB, log depth, validity), the last frame forward-warped into the target
  camera, the cache render of the fused point map at the target camera, the far-field panorama (beyond the 60 m
  fuse range) and the target's world ray map; relative camera motion (SE(3), 6D rotation) and the context-noise
  level enter every block through FiLM. Outputs are blended per pixel between generating, copying the warped
  last frame and copying the cache (softmax over the valid sources); the confidence is 0 where the output's
  depth jumps by more than 10 % to a neighbour, so the map does not fuse blended edge depth. Where the cache
  shows a surface of an observed frame (the start frame), the frame shows it as observed. The camera rides the
  ground observed frames show (the start frame's; no weights) at eye height, not its own generated ground
  (whose depth-scale errors sank the camera); where they show none, a small pose head trained to predict the
  rest of the motion beyond the commanded kinematics from the last depth moves it (it barely does). The
  `eye_height_err_m` row says how far the camera stays from the simulator's eye height over the true ground.
  A move into a surface the last frame shows at body height, or the observed frames' map does, is not made
  (`blocked_by_own_view`, `blocked_by_map`; no weights).
- **Training data**: {walks} seeded walks of the procedural world (seeds {seed_lo}..{seed_hi}; evaluation uses
  seeds 0..99, never trained on): loops that come back, turned round or retracing the way out, wandering
  DeepVerse actions, and continuous target poses with pitch; cache renders made by the real engine at each step.
- **Training**: {steps} steps, batch {batch}, AdamW, cosine LR from {lr}; context noise, corrupted caches
  (misregistration, dropped and recoloured patches) and, for {rollout_pct:.0f} % of batches {rollout_when},
  the model's own 1-{max_rollout} step rollouts as context ({rollout_cache}), against drift.{adversarial}
  Hardware: {hardware}; {minutes} minutes.{lineage}

## Evaluation (`python launch.py eval`, {eval_walks} held-out loop walks of {eval_steps} steps, {eval_frames})

Each loop goes out along a wandering path and comes back over the same poses with the same headings; the
revisit rows cover the return steps whose true pose matches one of the way out. `revisit_outbound_psnr` scores
the frames of the way out that those steps match: what recalling its own frames exactly would give. The
simulator's start frame saw {start_seen} of the surfaces the revisits show; the rest, and the far field, the model
made on the way out.

{table}

Columns: `memory_on` = this model with its memory inputs; `memory_off` = the same network with them zeroed;
baselines on the simulator's true poses: `repeat` the last frame, `warp` the last frame, `cache_fill` the cache
render filled from the warped last frame and the far field; `memory_on_true_out` / `memory_off_true_out` /
`cache_fill_true_out` = WorldMem's protocol: the way out is the simulator's own frames (memory of real frames),
and the model makes the return with its memory inputs on / zeroed, or the cache + fill baseline does (their rows
cover the return alone).
"""


def known(value, spec: str = "") -> str:
    """``value`` formatted with ``spec``; "?" when it is not recorded."""
    return "?" if value is None else format(value, spec)


def describe_lineage(record: dict | None) -> str:
    """Card lines for the weights a fine-tune started from (``training.init``, nested when those were a
    fine-tune too); empty for a run trained from scratch."""
    lines = []
    while record:
        lines.append(f"\n  Fine-tuned from the weights then at `{record.get('from')}`: {known(record.get('steps'))} "
                     f"steps, batch {known(record.get('batch'))}, LR {known(record.get('lr'))}, "
                     f"{known(record.get('walks'))} walks; {known(record.get('hardware'))}; "
                     f"{known(record.get('minutes_trained'), '.1f')} minutes.")
        record = record.get("init")
    return "".join(lines)


def read_eval_json(path: str | Path) -> dict:
    """The summary ``launch.py eval --json`` wrote; ValueError (one line) for anything else."""
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"{path}: cannot read the eval JSON ({type(e).__name__}); pass the file `launch.py eval "
                         "--json` wrote") from None
    if not isinstance(summary, dict) or not {"walks", "steps", "size"} <= set(summary):
        raise ValueError(f"{path}: not an eval JSON written by `launch.py eval --json` (no walks/steps/size)")
    return summary


def ship(checkpoint: str | Path, dest: str | Path, eval_json: str | Path | None = None) -> Path:
    config, net = load_pretrained(checkpoint)
    training = config.get("training", {})
    tcfg = training.get("config", {})
    summary = read_eval_json(eval_json) if eval_json else None
    seeds = tcfg.get("train_seeds", [0])
    minutes = trained_minutes(checkpoint, training)
    card = CARD.format(
        size=config["size"][0], params=sum(p.numel() for p in net.parameters()) / 1e6, widths=config["widths"],
        walks=len(seeds), seed_lo=min(seeds), seed_hi=max(seeds), steps=training.get("steps", "?"),
        batch=tcfg.get("batch", "?"), lr=tcfg.get("lr", "?"), hardware=training.get("hardware", "?"),
        minutes=known(minutes, ".1f"), rollout_pct=100 * tcfg.get("rollout_share", 0),
        max_rollout=tcfg.get("max_rollout", 0), lineage=describe_lineage(training.get("init")),
        adversarial=(f"\n  A patch-adversarial loss (weight {tcfg['adversarial']}; hinge, a patch discriminator on "
                     "colour and log depth" + (" given the model's inputs" if tcfg.get("adversarial_context") else "")
                     + ") on the pixels it generates." if tcfg.get("adversarial") else ""),
        rollout_when=(f"after the first {tcfg['rollout_after']} steps" if tcfg.get("rollout_after")
                      else "from the start"),
        rollout_cache=("their frames fused into the later caches" if tcfg.get("rollout_into_cache", False)
                       else "the caches stayed the simulator's"),
        eval_walks=summary["walks"] if summary else "-", eval_steps=summary["steps"] if summary else "-",
        eval_frames=f"{summary['size']}x{summary['size']}" if summary else "-",  # (the eval walks square frames)
        table=format_table(summary) if summary else "(not evaluated)",
        start_seen=(f"{100 * summary['revisit_start_seen']:.0f} %"
                    if summary and summary.get("revisit_start_seen") is not None else "(not measured)"))
    if summary:
        config["eval"] = json_safe({k: v for k, v in summary.items() if k not in ("curves", "per_walk")})
    training.pop("history", None)
    if minutes is not None:
        training["minutes_trained"] = round(minutes, 1)
    return save_pretrained(dest, config, net, card=card, half=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m learn.ship", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("dest")
    p.add_argument("--eval", default=None, help="eval JSON written by `launch.py eval --json`")
    args = p.parse_args(argv)
    try:
        out = ship(args.checkpoint, args.dest, args.eval)
    except (WeightsError, WriteError, ValueError) as e:  # unusable weights or eval JSON, a folder not writable
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {write_error(e, Path(args.dest))}", file=sys.stderr)
        return 2
    print(f"shipped -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
