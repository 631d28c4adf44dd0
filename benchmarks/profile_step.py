"""Op-level profile of training steps: TensorFlow ops by self time.

Runs a few `train_on_batch` steps of each step kind under the TensorFlow
profiler and reads the host trace it writes (`*.xplane.pb`): each TensorFlow
op kernel is an event named `op_name:OpType` (oneDNN kernels
`_MklNativeOpType`, counted as `OpType`); an event's self time is its
duration minus that of the op events nested in it. Prints,
per step kind, the op types with the most self time per step and their share
of the kind's total op time, and writes JSON.

    python benchmarks/profile_step.py --model cnn_bn --kinds plain,l1,fbi
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import tempfile

import numpy as np
import tensorflow as tf
from step_time import compile_step, make_base, regularizers
from tensorflow.tsl.profiler.protobuf import xplane_pb2

import keras_attreg as kar


def _op_type(name: str) -> str | None:
    """`OpType` of an op kernel event `op_name:OpType`, else None."""
    if ":" not in name or "::" in name:
        return None
    # oneDNN kernels are registered as e.g. `_MklNativeConv2D`; a function
    # call (`EagerLocalExecute: __inference_...`) is no op.
    op = name.rsplit(":", 1)[1].removeprefix("_MklNative").removeprefix("_")
    return op if op.isidentifier() and not op.startswith("_") else None


def op_self_times(path: str) -> dict[str, float]:
    """Self time in ms of each op type in the host plane of one trace file.

    An op's self time is its duration minus that of the op events nested in
    it (e.g. the ops of a called function); other nested events (the
    `ParallelFor` shards an op runs on its own thread) stay part of the op.
    """
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    ops = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        types = {key: _op_type(meta.name) for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            events = sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps))
            stack = []  # [end, op type, self time] of the open op events
            for event in events:
                op = types.get(event.metadata_id)
                if op is None:
                    continue
                while stack and stack[-1][0] <= event.offset_ps:
                    _, done, own = stack.pop()
                    ops[done] += own / 1e9
                if stack:
                    stack[-1][2] -= event.duration_ps
                stack.append(
                    [event.offset_ps + event.duration_ps, op, event.duration_ps]
                )
            for _, done, own in stack:
                ops[done] += own / 1e9
    return dict(ops)


def profile(model, x, y, steps: int) -> dict[str, float]:
    """Op self times in ms per step over `steps` profiled steps."""
    for _ in range(3):
        model.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            model.train_on_batch(x, y)
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        return {op: ms / steps for op, ms in op_self_times(path).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn_bn", help="cnn_bn, cnn or resnet")
    parser.add_argument("--kinds", default="plain,l1,fbi")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--resnet-blocks", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--output", default="outputs/profile_step.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.batch_size)
    result = {}
    for kind in args.kinds.split(","):
        base = make_base(args.model, args)
        if kind == "plain":
            model = compile_step(base)
        else:
            model = compile_step(
                kar.AttributionRegularizedModel(base, regularizers()[kind])
            )
        ops = profile(model, x, y, args.steps)
        total = sum(ops.values())
        result[kind] = {"total_ms": total, "ops_ms": ops}
        print(f"\n{args.model} {kind}: {total:.1f} ms of op self time per step")
        print(f"{'op type':<32}{'ms/step':>10}{'share':>8}")
        for op, ms in sorted(ops.items(), key=lambda item: -item[1])[: args.top]:
            print(f"{op:<32}{ms:>10.2f}{ms / total:>8.1%}")
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"model": args.model, "kinds": result}, f, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
