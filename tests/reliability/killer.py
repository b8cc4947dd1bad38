"""Fault injection for the kill tests: run ``align`` in this process and SIGKILL it (as ``kill -9`` would) at a
chosen point. ``python -m tests.reliability.killer POINT N -- align-arguments ...``:

    shard N       right after the N-th reference cache shard is written
    step N        at the start of training step N (checkpoints of earlier steps are whole)
    save N        while checkpoint-N is written: its weights are on disk, its optimizer state is not
    sft N         at SFT step N, in the middle of the stage (its temporary copy is left behind)
    round N       between rounds of ``align iterate``: when round N (0-based) starts sampling
    trained N     when round N of ``align iterate`` has finished training (its summary.json and model written),
                  before ``state.json`` records the round
    generate N    in the middle of a rollout trainer's (GRPO's) sampling for step N: after the first decoding step
"""

from __future__ import annotations

import os
import signal
import sys


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    point, n = sys.argv[1], int(sys.argv[2])
    args = sys.argv[sys.argv.index("--") + 1:]
    if point == "shard":
        from align.reference.store import ReferenceStore

        real, count = ReferenceStore.write, [0]

        def write(self, *a, **k):
            name = real(self, *a, **k)
            count[0] += 1
            if count[0] == n:
                _die()
            return name

        ReferenceStore.write = write
    elif point in ("step", "sft"):
        if point == "step":
            from align.trainers.base import PreferenceTrainer as target
        else:
            from trl import SFTTrainer as target
        real_step = target.training_step

        def training_step(self, *a, **k):
            if self.state.global_step + 1 == n:
                _die()
            return real_step(self, *a, **k)

        target.training_step = training_step
    elif point == "save":
        from transformers import Trainer

        real_save = Trainer._save_optimizer_and_scheduler

        def save(self, output_dir):
            if self.state.global_step == n:
                _die()
            return real_save(self, output_dir)

        Trainer._save_optimizer_and_scheduler = save
    elif point == "generate":
        from align.online import engines

        real_decode = engines._decode
        state = {"step": None}

        def decode(model, *a, **k):
            if state["step"] == n:
                model.register_forward_hook(lambda *_: _die())  # dies inside the next decoding forward
            return real_decode(model, *a, **k)

        from align.trainers.rollout import RolloutTrainer

        real_rollout = RolloutTrainer._make_rollout

        def make_rollout(self, *a, **k):
            state["step"] = self.state.global_step + 1
            return real_rollout(self, *a, **k)

        engines._decode = decode
        RolloutTrainer._make_rollout = make_rollout
    elif point == "round":
        import align.iterate as iterate

        real_round = iterate._sample_round

        def sample_round(k, *a, **kw):
            if k == n:
                _die()
            return real_round(k, *a, **kw)

        iterate._sample_round = sample_round
    elif point == "trained":
        import align.pipeline as pipeline

        real_training = pipeline.train_offline

        def train_offline(recipe, output_dir=None, **kw):
            out = real_training(recipe, output_dir, **kw)
            if output_dir is not None and str(output_dir).endswith(f"round-{n}/train"):
                _die()
            return out

        pipeline.train_offline = train_offline
    else:
        raise SystemExit(f"unknown point {point}")
    from align.cli import main as align_main

    sys.exit(align_main(args))


if __name__ == "__main__":
    main()
