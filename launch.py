#!/usr/bin/env python
"""WorldStudio command line. `python launch.py` starts the studio; `python launch.py --help` lists the rest."""

from __future__ import annotations

import argparse
import os
import sys

from scenes.argtypes import SEED, SIZE, STEP_M, STEPS, VOXEL, YAW_DEG, folder_path, ranged
from worldmodel.recordings import FORMAT_NAMES


class _OneLineErrors(argparse.ArgumentParser):
    """argparse whose errors are one line: the usage block it prints first wraps to 5-11 lines here."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists the options)\n")


class _GivenWorld(argparse.Action):
    """--world that also notes it was given (``world_given``): --start-from refuses a world other than neural."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.world, namespace.world_given = values, True


def _add_world_args(p: argparse.ArgumentParser, default_world: str) -> None:
    p.add_argument("--world", default=default_world, action=_GivenWorld,
                   help="world to explore: neural[:WEIGHTS] | procedural | procedural:fly | replay:PATH | a plugin's "
                        f"NAME[:ARGS] (`launch.py worlds` lists them; default: {default_world})")
    p.add_argument("--start-from", default=None, metavar="PATH",
                   help="the learned model (--world neural[:WEIGHTS]) goes on from a frame of a saved session folder "
                        "(keeping its seed, voxel size and step settings) or a recording folder (replay:PATH options "
                        "allowed), the frames before it handed over as its memory")
    p.set_defaults(world_given=False, options_given_with_session=[])  # (main: the options a session overrides)
    p.add_argument("--start-frame", type=int, default=None, metavar="N",
                   help="with --start-from: the frame to go on from (a session: position in its current branch, "
                        "default its cursor; a recording: frame index after its stride and max_frames options, "
                        "default the last; -1 = the last)")
    p.add_argument("--seed", type=ranged(*SEED, integer=True), default=0, help="world seed (default: 0)")
    p.add_argument("--size", type=ranged(*SIZE, integer=True), nargs=2, default=None, metavar=("W", "H"),
                   help="frame size in pixels, 16..4096 (default: the world's own: 256 256 procedural, 128 128 neural)")
    p.add_argument("--voxel", type=ranged(*VOXEL), default=None,
                   help="fused-map voxel size in metres, 0.005..5 (default: 0.1; for a recording 1/50 of the "
                        "median depth of its first frames rounded down to 2 or 5 cm, up to 0.1)")
    p.add_argument("--step-m", type=ranged(*STEP_M), default=None,
                   help="metres moved per translation step, 0..100 (default: 0.5, or what learned weights were "
                        "trained with)")
    p.add_argument("--yaw-deg", type=ranged(*YAW_DEG), default=None,
                   help="degrees turned per steering step, 0..180 (default: 10, or what learned weights were "
                        "trained with)")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog="launch.py", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    view = sub.add_parser("view", help="start the studio in the browser (the default command)")
    _add_world_args(view, "neural")
    view.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default 127.0.0.1; 0.0.0.0 shares it on your network)")
    view.add_argument("--port", type=ranged(0, 65535, integer=True), default=8080, help="port (default: 8080)")
    view.add_argument("--session", default=None, help="open a saved session folder instead of a new world")
    view.add_argument("--root", default=".",
                      help="workspace root: folders typed in the browser must be inside it (default: current folder)")
    view.add_argument("--no-token", action="store_true",
                      help="with --host other than loopback, do not require the access token (anyone on the "
                           "network can then drive the studio)")

    run = sub.add_parser("run", help="explore headless and write PLY, GLB, MP4, trajectory, transforms.json, session")
    _add_world_args(run, "procedural")
    what = run.add_mutually_exclusive_group(required=True)
    what.add_argument("--actions", help='action string in DeepVerse grammar, e.g. "(FN)(FN)(fLN)(BR)"')
    what.add_argument("--steps", type=ranged(*STEPS, integer=True), help="number of steps of a generated walk (see --walk)")
    run.add_argument("--walk", choices=("random", "forward", "orbit"), default="random",
                     help="walk used with --steps: random (seeded wander), forward, orbit (default: random)")
    run.add_argument("--out", required=True, type=folder_path,
                     help="output folder (created if missing; one holding an earlier run's files is refused)")
    run.add_argument("--no-video", action="store_true", help="skip frames.mp4")
    run.add_argument("--no-memory", action="store_true",
                     help="no geometry-aware memory (no retrieval, no cache render; the model sees recent frames only)")
    run.add_argument("--retrieval", choices=("ours", "deepverse", "worldmem"), default="ours",
                     help="memory retrieval rule: which keyframes the model is handed and the session records "
                          "(default: ours); the learned world reads the map's cache render, not the keyframes, so "
                          "its frames do not depend on the rule")
    run.add_argument("--autosave", type=ranged(0, STEPS[1], integer=True), default=None, metavar="N",
                     help="save OUT/session every N steps (0 = off; default: every 100 steps for runs longer "
                          "than 300 steps), so a crash or kill loses at most one interval")
    run.add_argument("--autosave-seconds", type=ranged(0, 1e6), default=None, metavar="T",
                     help="also autosave when T seconds have passed since the last save (default: 120 when "
                          "autosave is on)")
    run.add_argument("--resume", default=None, metavar="DIR",
                     help="continue the session in DIR (e.g. OUT/session after a crash): run the same command "
                          "with --resume; the steps it already holds are not repeated")

    ev = sub.add_parser("eval-recon", help="fuse a recorded sequence and report accuracy vs open3d's TSDF fusion")
    ev.add_argument("path", help=f"sequence folder: {FORMAT_NAMES}; "
                    "PATH?up=+z&stride=2&max_frames=N&level=1 as --world replay: takes")
    ev.add_argument("--voxel", type=ranged(*VOXEL), default=0.02, help="voxel size in metres for both methods (default 0.02)")
    ev.add_argument("--reference", default=None, help="reference mesh or point cloud (PLY/OBJ/GLB) for accuracy")
    ev.add_argument("--max-frames", type=ranged(*STEPS, integer=True), default=None, help="use only the first N frames")
    ev.add_argument("--no-carve", action="store_true",
                    help="fuse without free-space carving (ghost surfaces from noisy depth are kept)")
    ev.add_argument("--json", default=None, metavar="FILE", help="also write {metric: number} to FILE")

    tr = sub.add_parser("train", help="train the learned world model on walks of the procedural world")
    tr.add_argument("--out", default="runs/neural", type=folder_path, help="checkpoint folder (config.json + model.safetensors)")
    tr.add_argument("--data", default="runs/shards", help="folder of walk shards (made when missing, then reused)")
    tr.add_argument("--minutes", type=ranged(0.01, 1e6), default=60.0, help="training time budget (default: 60)")
    tr.add_argument("--steps", type=ranged(*STEPS, integer=True), default=20000, help="at most this many optimiser steps (default: 20000)")
    tr.add_argument("--batch", type=ranged(1, 4096, integer=True), default=None,
                    help="samples per step and process (default: 12)")
    tr.add_argument("--lr", type=ranged(1e-8, 1.0), default=None, help="peak learning rate (default: 6e-4)")
    tr.add_argument("--walks", type=ranged(1, 1_000_000, integer=True), default=None,
                    help="train on the first N walks only (default: 320)")
    tr.add_argument("--workers", type=ranged(1, 256, integer=True), default=2, help="processes generating missing shards (default: 2)")
    tr.add_argument("--seed", type=ranged(*SEED, integer=True), default=None,
                    help="seed of initial weights and sampling (default: 0)")
    tr.add_argument("--val-walks", type=ranged(1, 900, integer=True), default=None,
                    help="validation walks (default: 8; at most 900: seeds 100..999, below the training seeds)")
    tr.add_argument("--walk-steps", type=ranged(2, 100_000, integer=True), default=None,
                    help="steps per generated walk (default: 80)")
    tr.add_argument("--widths", type=ranged(8, 1024, integer=True), nargs="+", default=[48, 96, 144, 192],
                    help="U-Net channels per level, 2 to 6 multiples of 8 in 8..1024 (default: 48 96 144 192)")
    tr.add_argument("--val-every", type=ranged(*STEPS, integer=True), default=None,
                    help="validate every N steps (default: 500)")
    tr.add_argument("--rollout-share", type=ranged(0.0, 1.0), default=None,
                    help="share of batches made from the model's own rollouts (default: 0.4)")
    tr.add_argument("--max-rollout", type=ranged(1, 64, integer=True), default=None,
                    help="longest rollout before the trained step (default: 3)")
    tr.add_argument("--rollout-after", type=ranged(0, STEPS[1], integer=True), default=None,
                    help="steps trained on true context only before rollouts start (default: 800)")
    tr.add_argument("--rollout-cache-truth", action="store_true", default=None,
                    help="rollouts keep the true cache render (default: the rollout's own frames are fused into it)")
    tr.add_argument("--adversarial", type=ranged(0.0, 100.0), default=None, metavar="W",
                    help="weight of a patch-adversarial loss on the pixels the model generates (default: 0 = off)")
    tr.add_argument("--adversarial-context", action="store_true", default=None,
                    help="the discriminator also sees the model's inputs (cache, last frame, rays): a conditional GAN")
    tr.add_argument("--resume", action="store_true",
                    help="continue the run saved in --out (with the model it saved: its widths win over --widths; "
                         "the training options not given again keep the run's); without it, --out must not hold a "
                         "model or checkpoint")
    tr.add_argument("--init", default=None,
                    help="fine-tune: start from these weights (folder or hub repo id; their widths win; "
                         "a fresh optimiser and schedule; --resume of --out takes precedence)")

    neval = sub.add_parser("eval", help="evaluate the learned model: rollouts, revisits, baselines (table, plots)")
    neval.add_argument("--weights", default=None, help="model folder or hub repo id (default: the shipped weights)")
    neval.add_argument("--walks", type=ranged(1, 100, integer=True), default=8,
                       help="held-out loop walks, seeds 0..N-1 of the 100 held out (default: 8)")
    neval.add_argument("--steps", type=ranged(8, 100_000, integer=True), default=80,
                       help="steps per walk, half out and half back, 8..100000 (default: 80)")
    neval.add_argument("--json", default=None, metavar="FILE", help="also write {metric: number} to FILE")
    neval.add_argument("--plots", default=None, metavar="DIR", help="write PSNR-per-step and contact-sheet PNGs")

    sub.add_parser("worlds", help="list every world --world accepts (built-ins and installed plugins)")

    info = sub.add_parser("info", help="what a saved session holds (world, frames, branches, map points, size), "
                                       "checking it opens, e.g. after a crash; or what a recording's reader sees "
                                       "(format, frames, camera, notes)")
    info.add_argument("path", help="session folder (the one that holds session.json), or a recording (PATH?stride=2 "
                                   "as --world replay: takes)")

    bench = sub.add_parser("bench", help="measure speed and memory; prints a table (targets in DESIGN.md)")
    bench.add_argument("--json", default=None, metavar="FILE", help="also write {metric: number} to FILE")
    bench.add_argument("--only", default=None,
                       help="comma-separated sections to run (default: all); see the README's bench table")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke run)")
    return parser


def _check_start_from(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--start-from hands over to the learned model (weights: ``--world neural:WEIGHTS``, else the shipped ones):
    it refuses another --world, --session, and --size (the model makes frames at its own size)."""
    if args.start_from is None:
        if args.start_frame is not None:
            parser.error("--start-frame needs --start-from PATH (the session or recording it is a frame of)")
        return
    if args.world_given and args.world.partition(":")[0] != "neural":
        parser.error(f"--start-from hands over to the learned model; drop --world {args.world} or use "
                     "--world neural[:WEIGHTS]")
    if args.command == "view" and args.session is not None:
        parser.error("--start-from and --session both say what to open; give one of them")
    if args.size is not None:
        parser.error("--size does not apply with --start-from: the learned model makes frames at its own size")
    from scenes.session import is_session_folder, session_meant_by

    resuming = args.command == "run" and args.resume  # (--resume says what it does not use)
    from_session = is_session_folder(args.start_from) or session_meant_by(args.start_from) is not None
    if not resuming and from_session:  # a session's seed, voxel and steps are kept: those given that differ are said
        args.options_given_with_session = _given(parser, args, SESSION_KEEPS)


SESSION_KEEPS = (("seed", "--seed"), ("voxel", "--voxel"), ("step_m", "--step-m"), ("yaw_deg", "--yaw-deg"))


RESUME_KEEPS = (("world", "--world"), ("seed", "--seed"), ("size", "--size"), ("voxel", "--voxel"),
                ("step_m", "--step-m"), ("yaw_deg", "--yaw-deg"), ("retrieval", "--retrieval"),
                ("start_from", "--start-from"), ("start_frame", "--start-frame"))


def _given(parser: argparse.ArgumentParser, args: argparse.Namespace, options) -> list[str]:
    """The flags of ``options`` ((name, flag) pairs) that ``args`` sets to other than their defaults (--world: given
    at all)."""
    defaults = parser.parse_args(["run", "--out", "x", "--steps", "1"] if args.command == "run" else ["view"])
    return [flag for name, flag in options if getattr(args, name) != getattr(defaults, name)
            or name == "world" and args.world_given]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["view", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("view", "run"):
        _check_start_from(parser, args)
    if args.command == "view":
        from studio.app import main as studio_main

        if args.session is not None:  # the session's own settings: those given that differ are said (studio.app)
            args.options_given_with_session = _given(parser, args, (*SESSION_KEEPS, ("size", "--size")))
        return studio_main(args)
    if args.command == "run":
        from scenes.headless import main as run_main

        if args.resume:  # the session's own world and settings: those given that differ are said (scenes.headless)
            args.options_given_with_session = _given(parser, args, RESUME_KEEPS)

        return run_main(args)
    if args.command == "eval-recon":
        from scenes.evaluate import main as eval_main

        return eval_main(args)
    if args.command == "train":
        from learn.train import main as train_main

        return train_main(args)
    if args.command == "eval":
        from learn.evaluate import main as neural_eval_main

        return neural_eval_main(args)
    if args.command == "worlds":
        from worldmodel.registry import available_worlds, hidden_plugins

        for name, entry in available_worlds().items():
            origin = "" if entry.origin == "built-in" else f"  [plugin: {entry.origin}]"
            print(f"{name:14s} {entry.description}{origin}")
        for hidden in hidden_plugins():
            print(f"note: the plugin world {hidden} is hidden by another world of that name; rename its entry point "
                  "to use it", file=sys.stderr)
        return 0
    if args.command == "info":
        from scenes.info import main as info_main

        return info_main(args)
    if args.command == "bench":
        from studio.bench import main as bench_main

        return bench_main(args)
    build_parser().print_help()
    return 2


if __name__ == "__main__":
    try:
        try:
            code = main()
        finally:  # (argparse's --help and error exits too) a reader of stdout that has gone shows here, not at exit
            if sys.stdout is not None:  # (None: started with stdout closed, `>&-`; print writes nothing then)
                sys.stdout.flush()
    except BrokenPipeError:  # stdout's reader left early (`launch.py info X | head -1`): quiet, as `head` expects
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python would flush into the pipe again
        sys.exit(141)  # (128 + SIGPIPE, what a shell tool that met a closed pipe returns)
    except KeyboardInterrupt:  # Ctrl-C where no command handles it (while importing, say): one line, no traceback
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code)
