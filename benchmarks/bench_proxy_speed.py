"""The proxy's training speed: every point and seed of a search or study is one proxy training
(:func:`effnet.search.proxy.train_proxy`), so its speed is how many points × seeds a user gets per hour.

Side by side in one process, rounds interleaved and their order shuffled (other work on the machine
slows every contender alike), at the study's default proxy (b0_mini on the built-in digits, 32 px,
batch 64, the ``small`` recipe, in-memory data):

- ``proxy``: ``train_proxy`` as a study calls it (set-up, training, evaluation, report);
- ``plain effnet``: a plain loop over the same effnet module (SGD + Nesterov, label smoothing, no
  augmentation, NCHW tensors: what a user writes by hand);
- ``plain timm``: the same loop over timm's EfficientNet-B0 at the same width and depth (0.25, 0.34);
- ``old proxy`` (with ``--old``): ``train_proxy`` of another copy of effnet, e.g. the last commit's:

      mkdir -p /tmp/old && git archive HEAD src/effnet | tar -x -C /tmp/old
      mv /tmp/old/src/effnet /tmp/old/src/effnet_old
      grep -rl effnet /tmp/old/src/effnet_old --include=*.py | \\
          xargs sed -i -E 's/\\b(from|import) effnet(\\.|\\b)/\\1 effnet_old\\2/g'
      python benchmarks/bench_proxy_speed.py --old /tmp/old/src

Training images/s counts the training steps only (the trainers' own ``train_seconds``); trials per hour
count a whole ``train_proxy`` call (wall time).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from results import interleaved, save_result

sys.path.insert(0, str(Path(__file__).resolve().parent))


def proxy_runner(package: str, epochs: int, batch_size: int, resolution: int, seed: int) -> Callable[[], dict]:
    """One ``train_proxy`` trial of ``package`` (``effnet`` or a renamed copy) at the study's defaults."""
    proxy_mod = importlib.import_module(f"{package}.search.proxy")
    zoo = importlib.import_module(f"{package}.zoo")
    proxy = proxy_mod.Proxy(epochs=epochs, batch_size=batch_size, resolution=resolution, seed=seed)
    spec = proxy_mod.proxy_base(zoo.resolve_description("b0_mini"), proxy)

    def run() -> dict:
        start = time.perf_counter()
        result = proxy_mod.train_proxy(spec, proxy)
        wall = time.perf_counter() - start
        return {
            "images_per_second": result["steps"] * batch_size / result["train_seconds"],
            "wall": wall,
            "accuracy": result["accuracy"],
        }

    return run


def plain_runner(kind: str, epochs: int, batch_size: int, resolution: int, seed: int) -> Callable[[], dict]:
    """A plain training loop (no EMA, no evaluation) over effnet's b0_mini or timm's same-size B0, on
    the digits at ``resolution`` (resized once, no augmentation)."""
    from effnet.data.tensor_cache import tensor_splits
    from effnet.models.efficientnet import EfficientNet
    from effnet.zoo import resolve_description

    splits = tensor_splits("digits")
    pixels = splits.train.pixels.float() / 255
    pixels = torch.nn.functional.interpolate(pixels, size=(resolution, resolution), mode="bilinear")
    images = (pixels - 0.5) / 0.25
    targets = torch.tensor(splits.train.targets)
    steps = epochs * (len(targets) // batch_size)

    def build() -> torch.nn.Module:
        torch.manual_seed(seed)
        if kind == "timm":
            from timm.models.efficientnet import _gen_efficientnet

            return _gen_efficientnet(
                "efficientnet_b0", channel_multiplier=0.25, depth_multiplier=0.34, num_classes=splits.num_classes
            )
        spec = resolve_description("b0_mini").with_(resolution=resolution)
        return EfficientNet(spec, num_classes=splits.num_classes)

    def run() -> dict:
        start = time.perf_counter()
        net = build().train()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.2 * batch_size / 256, momentum=0.9, nesterov=True)
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
        tick = time.perf_counter()
        for step in range(steps):
            index = order[(step * batch_size) % (len(order) - batch_size + 1) :][:batch_size]
            loss = criterion(net(images[index]), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        train = time.perf_counter() - tick
        return {"images_per_second": steps * batch_size / train, "wall": time.perf_counter() - start}

    return run


def stacked_versus_apart(seeds: int, batch_size: int, resolution: int, rounds: int) -> dict[str, float]:
    """Milliseconds per training step of ``seeds`` b0_mini models trained as one batched model
    (``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``, NCHW: vmap's inputs are 5-D)
    and trained apart (NCHW, and channels_last as the trainer does on the CPU): whether a point's seeds
    gain from being trained together."""
    import copy

    from torch.func import functional_call, stack_module_state, vmap

    from effnet.models.efficientnet import EfficientNet
    from effnet.zoo import resolve_description

    # no stochastic depth: torchvision's draws in place, which vmap refuses to make differ per model
    spec = resolve_description("b0_mini").with_(resolution=resolution, drop_path_rate=0.0)
    nets = [EfficientNet(spec, num_classes=10).train() for _ in range(seeds)]
    images = torch.randn(seeds, batch_size, 3, resolution, resolution)
    targets = torch.randint(0, 10, (seeds, batch_size))
    skeleton = copy.deepcopy(nets[0]).to("meta")
    params, buffers = stack_module_state(nets)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    stacked_optimizer = torch.optim.SGD(list(params.values()), lr=0.01, momentum=0.9, nesterov=True, foreach=True)

    def one(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(skeleton, (p, b), (x,))

    def stacked() -> None:
        logits = vmap(one, randomness="different")(params, buffers, images)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
        stacked_optimizer.zero_grad(set_to_none=True)
        (loss / batch_size).backward()
        stacked_optimizer.step()

    def apart(layout: torch.memory_format) -> Callable[[], None]:
        models = [copy.deepcopy(n).to(memory_format=layout) for n in nets]
        inputs = [x.contiguous(memory_format=layout) for x in images]
        optimizers = [
            torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True, foreach=True) for m in models
        ]

        def run() -> None:
            for model, x, y, optimizer in zip(models, inputs, targets, optimizers, strict=True):
                loss = torch.nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

        return run

    runners = {"stacked (vmap)": stacked, "apart NCHW": apart(torch.contiguous_format)}
    runners["apart channels_last"] = apart(torch.channels_last)

    def milliseconds_per_step(run: Callable[[], None], steps: int = 5) -> Callable[[], float]:
        def timed() -> float:
            start = time.perf_counter()
            for _ in range(steps):
                run()
            return (time.perf_counter() - start) / steps * 1000

        return timed

    times = interleaved({name: milliseconds_per_step(run) for name, run in runners.items()}, rounds)
    return {name: round(statistics.median(t), 1) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", help="folder holding a renamed copy of effnet (package effnet_old) to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial (the study's default 2)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-peers", action="store_true", help="skip the plain loops")
    parser.add_argument(
        "--stacked", type=int, metavar="SEEDS", help="also time SEEDS models trained as one vmapped model vs apart"
    )
    parser.add_argument("--save", action="store_true", help="save the figures with benchmarks/results.py")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = (args.epochs, args.batch_size, args.resolution, 0)
    runners: dict[str, Callable[[], dict]] = {"proxy": proxy_runner("effnet", *shape)}
    if args.old:
        sys.path.insert(0, str(Path(args.old).resolve()))
        runners["old proxy"] = proxy_runner("effnet_old", *shape)
    if not args.no_peers:
        runners["plain effnet"] = plain_runner("effnet", *shape)
        runners["plain timm"] = plain_runner("timm", *shape)
    found = interleaved(runners, args.rounds)
    summary: dict[str, Any] = {}
    for name, runs in found.items():
        speed = statistics.median(r["images_per_second"] for r in runs)
        wall = statistics.median(r["wall"] for r in runs)
        summary[name] = {"images_per_second": round(speed, 1), "trial_seconds": round(wall, 3)}
        if "accuracy" in runs[0]:
            summary[name]["accuracy"] = [round(r["accuracy"], 4) for r in runs]
    reference = summary["proxy"]["images_per_second"]
    print(f"{'':14} {'train img/s':>11} {'vs proxy':>9} {'s/trial':>8} {'trials/h':>9}")
    for name, row in summary.items():
        ratio = row["images_per_second"] / reference
        print(
            f"{name:14} {row['images_per_second']:11.1f} {ratio:8.2f}× {row['trial_seconds']:8.2f} "
            f"{3600 / row['trial_seconds']:9.0f}"
        )
    for other in ("old proxy", "plain effnet"):
        if other not in found:
            continue
        pairs = list(zip(found["proxy"], found[other], strict=True))  # the same round: the same load
        speed = sorted(new["images_per_second"] / old["images_per_second"] for new, old in pairs)
        trials = sorted(old["wall"] / new["wall"] for new, old in pairs)
        summary[f"proxy_vs_{other.replace(' ', '_')}"] = {"images_per_second": speed, "trials_per_hour": trials}
        print(
            f"proxy / {other}, per round: training images/s {statistics.median(speed):.2f}× "
            f"({speed[0]:.2f}–{speed[-1]:.2f}), trials per hour {statistics.median(trials):.2f}× "
            f"({trials[0]:.2f}–{trials[-1]:.2f})"
        )
    if args.stacked:
        steps = stacked_versus_apart(args.stacked, args.batch_size, args.resolution, args.rounds)
        summary["stacked_ms_per_step"] = steps
        print(f"{args.stacked} seeds, ms per training step of all of them:")
        for name, ms in steps.items():
            print(f"  {name:20} {ms:8.1f}")
    if args.save:
        save_result("proxy-speed", {"settings": vars(args), "summary": summary})


if __name__ == "__main__":
    main()
