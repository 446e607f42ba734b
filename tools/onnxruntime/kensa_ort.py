"""Run exported Kensa graphs in onnxruntime and the ONNX checker.

  kensa_ort.py check MODEL.onnx...
      onnx.checker with full shape inference; exits non-zero on the first failure.
  kensa_ort.py run MODEL.onnx INPUT.u8... --out DIR
      each INPUT is raw u8 pixels [1,3,H,W]; writes DIR/<model>.<input>.map (f32 LE)
      and DIR/<model>.<input>.score (f32 LE), one thread.
  kensa_ort.py bench MODEL.onnx [INPUT.u8] --runs N --threads T
      prints JSON {"p50_ms":..., "p90_ms":...} of single-image latency.
  kensa_ort.py profile MODEL.onnx [INPUT.u8] --runs N --threads T
      prints JSON {op_type: ms per run} from onnxruntime's profiler.

The graphs are read from .onnx files (`kensa inspect-package --extract-onnx`), so this
script needs to know nothing about the package layout.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort


def session(path, threads, profile=False):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_profiling = profile
    if profile:
        # The profiler writes a JSON file; keep it out of the working directory.
        so.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="kensa-ort-"), "profile")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def load_input(sess, path):
    shape = sess.get_inputs()[0].shape
    if path is None:
        # Latency does not depend on pixel values; a fixed pseudo-random frame.
        return np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    data = np.fromfile(path, dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        sys.exit(f"{path}: {data.size} bytes, the graph wants {shape}")
    return data.reshape(shape)


def cmd_check(args):
    for path in args.models:
        onnx.checker.check_model(onnx.load(path), full_check=True)
        print(f"{path}: ONNX checker passed")


def cmd_run(args):
    sess = session(args.model, 1)
    name = sess.get_inputs()[0].name
    stem = os.path.splitext(os.path.basename(args.model))[0]
    for path in args.inputs:
        anomaly_map, score = sess.run(["anomaly_map", "score"], {name: load_input(sess, path)})
        base = os.path.join(args.out, f"{stem}.{os.path.splitext(os.path.basename(path))[0]}")
        anomaly_map.astype("<f4").tofile(base + ".map")
        score.astype("<f4").tofile(base + ".score")


def timed(sess, x, runs):
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t) * 1e3)
    return times


def cmd_bench(args):
    sess = session(args.model, args.threads)
    t = np.array(timed(sess, load_input(sess, args.input), args.runs))
    print(json.dumps({"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90))}))


def cmd_profile(args):
    sess = session(args.model, args.threads, profile=True)
    timed(sess, load_input(sess, args.input), args.runs)
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    per_op = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1e3 / (args.runs + 3)
    print(json.dumps(dict(sorted(per_op.items(), key=lambda kv: -kv[1]))))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("models", nargs="+")
    r = sub.add_parser("run")
    r.add_argument("model")
    r.add_argument("inputs", nargs="+")
    r.add_argument("--out", required=True)
    for name in ("bench", "profile"):
        b = sub.add_parser(name)
        b.add_argument("model")
        b.add_argument("input", nargs="?", help="raw u8 pixels (default: a fixed random frame)")
        b.add_argument("--runs", type=int, default=50)
        b.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    {"check": cmd_check, "run": cmd_run, "bench": cmd_bench, "profile": cmd_profile}[args.cmd](args)


if __name__ == "__main__":
    main()
