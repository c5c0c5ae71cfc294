"""ARM64 check: the device install on a 64-bit ARM Linux userland (qemu-user), predictions
equal to the x86_64 ones.

    python scripts/check_arm64.py [MODEL ...] [--rows 200] [--data-dir DIR] [--json REPORT.json]
    make check-arm64 [ARM64_MODELS="m.mome m-speed.onnx m-memory.onnx"]

Steps (each cached under --cache-dir, default ~/.cache/mome-edge-arm64; Debian 12 x86_64 as root):
  1. qemu-user-static from apt when `qemu-aarch64-static` is missing.
  2. A Debian bookworm arm64 userland: `dpkg --add-architecture arm64`, `apt-get download` of
     python3.11-minimal, its stdlib and the C/C++ runtime libraries, `dpkg -x` into a sysroot.
  3. The device install's dependencies (pyproject's base `dependencies`, onnxruntime pinned to
     --onnxruntime) as aarch64 wheels: `pip install --platform manylinux... --only-binary=:all:
     --target DIR`; then this checkout, fresh on every run (`pip install --no-deps --target`).
  4. Inputs: the first --rows census-income test rows encoded for the models (then two rows of
     out-of-range ids), followed by the golden rows written by `mome-edge export` beside each
     model (MODEL.golden.json, mome_edge.runtime.golden) when present. --rows 0: golden rows only.
  5. scripts/device_predict.py runs every device path of every model, once with this Python
     (x86_64) and once with the arm64 Python under qemu-aarch64-static; every probability of
     the arm64 run must equal the x86_64 one (and, on the golden rows, the file's `expected`)
     within ARM64_TOLERANCE.

Without MODEL arguments, a tiny census-income MoME is trained, compiled and exported here
(needs the [train] extra and the census data) into DEFAULT_EXPORTS. Exit 0: all equal;
1: a difference above the tolerance; 2: the check could not run (one `error:` line).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

ARM64_TOLERANCE = 1e-5  # max |p_arm64 - p_x86_64|: the same float32 graph, other SIMD kernels
# The newest onnxruntime whose aarch64 wheel runs under Debian 12's qemu-aarch64 7.2: measured,
# 1.20.1 to 1.27.0 import and run; 1.28.0 to 1.32.0 die at import (qemu: SIGSEGV). Real arm64
# hardware is not affected; under emulation the arm64 side pins this version.
DEFAULT_ONNXRUNTIME = "1.27.0"
DEFAULT_CACHE = Path.home() / ".cache" / "mome-edge-arm64"
# manylinux tags an arm64 Debian 12 (glibc 2.36) accepts; pip does not widen --platform by itself
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
ARM64_PYTHON = "3.11"  # bookworm's python3.11
# the arm64 userland: the interpreter, its stdlib, and the shared libraries it and the wheels load
ARM64_DEBS = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libgcc-s1", "libstdc++6",
    "gcc-12-base", "zlib1g", "libexpat1", "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libuuid1",
    "libcrypt1", "libncursesw6", "libtinfo6", "libreadline8", "libdb5.3", "libnsl2", "libtirpc3", "libgssapi-krb5-2",
    "libkrb5-3", "libk5crypto3", "libkrb5support0", "libcom-err2", "libkeyutils1",
)
# the exports built when no MODEL is given: (file name, extra `mome-edge export` flags); with
# the .mome (numpy) they are the three deployments issue 12 checks on arm64, each .onnx with its .ort.
DEFAULT_EXPORTS = (("mome-speed.onnx", ["--mode", "speed", "--ort"]), ("mome-memory.onnx", ["--mode", "memory", "--ort"]))
DEFAULT_ROWS = 200
DEFAULT_DATASET = "census-income"
# ids outside every vocabulary, below and above: the graph clamps them to the OOV row (0)
OUT_OF_RANGE_IDS = (-7, 2**40)
TINY_CENSUS_TRAIN = ["--max-rows", "6000", "--hidden", "32,16", "--experts", "4", "--epochs", "4",
                     "--neuron-epochs", "1", "--harden-epochs", "1", "--quiet"]


# wait for another apt/dpkg run instead of failing on its lock
APT_GET = ("apt-get", "-o", "DPkg::Lock::Timeout=300")


class CheckError(Exception):
    """The check could not run: message = problem; fix."""


def run(cmd: list[str], *, what: str, cwd: Path | None = None, env: dict | None = None, fix: str | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        status = f"killed by signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        raise CheckError(f"{what} failed ({status}: {' | '.join(tail)[-600:]}); {fix or f'run `{shlex.join(cmd)}` to see why'}")
    return done.stdout


# --- 1-3: qemu, the arm64 userland, the device install ---------------------------------------
def ensure_qemu() -> str:
    qemu = shutil.which("qemu-aarch64-static")
    if qemu:
        return qemu
    if os.geteuid() != 0:
        raise CheckError("qemu-aarch64-static is missing and this is not root; run `apt-get install qemu-user-static` as root")
    run([*APT_GET, "update", "-q"], what="apt-get update")
    run([*APT_GET, "install", "-y", "-q", "qemu-user-static"], what="apt-get install qemu-user-static",
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    qemu = shutil.which("qemu-aarch64-static")
    if not qemu:
        raise CheckError("qemu-user-static installed no qemu-aarch64-static; check `dpkg -L qemu-user-static`")
    return qemu


def ensure_sysroot(cache: Path) -> Path:
    """A bookworm arm64 userland with python3.11 under cache/sysroot (built once)."""
    sysroot, stamp = cache / "sysroot", cache / "sysroot.done"
    wanted = " ".join(ARM64_DEBS)
    if stamp.is_file() and stamp.read_text() == wanted:
        return sysroot
    if os.geteuid() != 0:
        raise CheckError(f"building the arm64 userland needs root (dpkg --add-architecture, apt-get); run as root or copy {sysroot} from a machine that built it")
    if "arm64" not in run(["dpkg", "--print-foreign-architectures"], what="dpkg").split():
        run(["dpkg", "--add-architecture", "arm64"], what="dpkg --add-architecture arm64")
        run([*APT_GET, "update", "-q"], what="apt-get update (arm64 lists)")
    debs = cache / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    download = [*APT_GET, "download", "-q", *(f"{name}:arm64" for name in ARM64_DEBS)]
    try:
        run(download, what="apt-get download (arm64)", cwd=debs)
    except CheckError:  # lists older than the arch, or stale: refresh once
        run([*APT_GET, "update", "-q"], what="apt-get update")
        run(download, what="apt-get download (arm64)", cwd=debs)
    shutil.rmtree(sysroot, ignore_errors=True)
    for deb in sorted(debs.glob("*.deb")):
        run(["dpkg", "-x", str(deb), str(sysroot)], what=f"dpkg -x {deb.name}")
    shutil.rmtree(debs)  # unpacked: the .debs are not needed again
    stamp.write_text(wanted)
    return sysroot


def base_dependencies() -> list[str]:
    """The base (device) `dependencies` of pyproject.toml."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def pin_onnxruntime(requirements: list[str], version: str) -> list[str]:
    return [f"onnxruntime=={version}" if re.match(r"onnxruntime\b(?![-_])", r) else r for r in requirements]


def ensure_device_site(cache: Path, onnxruntime: str) -> Path:
    """aarch64 wheels of the device dependencies under cache/site-<key> (built once per set)."""
    requirements = pin_onnxruntime(base_dependencies(), onnxruntime)
    key = hashlib.sha256(json.dumps([requirements, PLATFORMS, ARM64_PYTHON]).encode()).hexdigest()[:12]
    site, stamp = cache / f"site-{key}", cache / f"site-{key}.done"
    if stamp.is_file():
        return site
    shutil.rmtree(site, ignore_errors=True)
    platforms = [flag for tag in PLATFORMS for flag in ("--platform", tag)]
    run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(site),
         *platforms, "--python-version", ARM64_PYTHON, "--implementation", "cp", "--only-binary=:all:", *requirements],
        what="pip install of the aarch64 wheels")
    stamp.write_text("\n".join(requirements))
    return site


def install_checkout(target: Path) -> None:
    """This checkout (pure Python) into `target`, without dependencies: the code under test."""
    run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--target", str(target), str(ROOT)], what="pip install of this checkout")


# --- 4: inputs, and the default models -------------------------------------------------------
def build_default_models(folder: Path, data_dir: str | None) -> list[Path]:
    mome_edge = [sys.executable, "-m", "mome_edge.cli"]
    data = ["--data-dir", data_dir] if data_dir else []
    run([*mome_edge, "train", "--model", "mome", "--dataset", "census-income", *data, "--out", str(folder / "run"),
         *TINY_CENSUS_TRAIN], what="training the tiny census model")
    artifact = folder / "mome.mome"
    run([*mome_edge, "compile", str(folder / "run"), "-o", str(artifact), *data], what="mome-edge compile")
    models = [artifact]
    for name, flags in DEFAULT_EXPORTS:
        run([*mome_edge, "export", str(artifact), "-o", str(folder / name), *flags], what=f"mome-edge export {name}")
        models.append(folder / name)
        if "--ort" in flags:
            models.append((folder / name).with_suffix(".ort"))
    return models


@dataclass(frozen=True, kw_only=True)
class Inputs:
    """The rows both sides predict: census rows first, then each distinct set of golden rows."""

    categorical: np.ndarray  # int64 (B, F)
    numerical: np.ndarray  # float32 (B, D)
    census_rows: int
    golden_rows: int
    # model -> (first row, the golden document): its `expected` covers rows first..first+len
    goldens: dict[Path, tuple[int, dict]]
    source: str


def census_rows(model: Path, *, rows: int, data_dir: str | None, dataset: str = DEFAULT_DATASET) -> tuple[np.ndarray, np.ndarray, str]:
    """The first `rows` test rows of `dataset` encoded for `model`, then the out-of-range-id rows.

    Needs the [train] extra (the data loaders use pandas); the model may be a .mome or an export.
    """
    from mome_edge.runtime import Predictor
    from mome_edge.runtime.predict import load_artifact_split

    predictor = Predictor(model)  # duck-types as the artifact: .spec and .metadata (the split record)
    part = load_artifact_split(predictor, dataset, split="test", data_dir=data_dir)
    cat = np.ascontiguousarray(part.categorical[:rows], dtype=np.int64)  # (B, F)
    num = np.ascontiguousarray(part.numerical[:rows], dtype=np.float32)  # (B, D)
    oov_cat = np.stack([np.full(cat.shape[1], value, dtype=np.int64) for value in OUT_OF_RANGE_IDS])  # (2, F)
    cat = np.concatenate([cat, oov_cat])
    num = np.concatenate([num, np.zeros((len(OUT_OF_RANGE_IDS), num.shape[1]), dtype=np.float32)])  # the means
    return cat, num, (f"{dataset} test split rows 0..{rows - 1}, then {len(OUT_OF_RANGE_IDS)} rows of ids "
                      f"{list(OUT_OF_RANGE_IDS)} in every field (out of range: read as OOV)")


def choose_inputs(models: list[Path], *, rows: int, data_dir: str | None) -> Inputs:
    """Census test rows (unless rows == 0), then the golden rows beside the models.

    Every export of one .mome carries the same golden inputs (drawn from its feature spec), so
    identical input sets are appended once and shared."""
    from mome_edge.runtime import golden

    blocks: list[tuple[np.ndarray, np.ndarray]] = []
    sources = []
    if rows:
        cat, num, source = census_rows(models[0], rows=rows, data_dir=data_dir)
        blocks.append((cat, num))
        sources.append(source)
    census = sum(len(c) for c, _ in blocks)
    offset, goldens, seen = census, {}, {}
    for model in models:
        path = golden.golden_path(model)
        if not path.is_file():
            continue
        doc = golden.read_golden(path)
        cat, num = golden.golden_inputs(doc)
        key = hashlib.sha256(cat.tobytes() + num.tobytes() + repr((cat.shape, num.shape)).encode()).hexdigest()
        if key not in seen:
            if blocks and (cat.shape[1], num.shape[1]) != (blocks[0][0].shape[1], blocks[0][1].shape[1]):
                raise CheckError(f"{path} has {cat.shape[1]} categorical and {num.shape[1]} numerical inputs, the other "
                                 "inputs differ; check the files of one model per run")
            seen[key] = offset
            blocks.append((cat, num))
            sources.append(f"golden rows {path.name} ({len(cat)})")
            offset += len(cat)
        goldens[model] = (seen[key], doc)
    if not blocks:
        raise CheckError("no inputs: --rows 0 and no MODEL.golden.json beside the models; drop --rows 0 (census test rows) "
                         "or export the models with `mome-edge export`, which writes the golden rows")
    return Inputs(categorical=np.concatenate([c for c, _ in blocks]), numerical=np.concatenate([n for _, n in blocks]),
                  census_rows=census, golden_rows=offset - census, goldens=goldens, source="; ".join(sources))


# --- 5: run both sides, compare ---------------------------------------------------------------
def compare(x86: dict, arm: dict, goldens: dict[Path, tuple[int, dict]]) -> list[dict]:
    """One row per (model, path): the largest differences, or the error of the side that failed.
    Against the golden `expected`: the model's golden rows only (they start at the recorded row)."""
    from mome_edge.runtime.golden import golden_max_abs

    rows = []
    by_key = {(r["model"], r["path"]): r for r in x86["results"]}
    for result in arm["results"]:
        ref = by_key[(result["model"], result["path"])]
        row = {"model": Path(result["model"]).name, "path": result["path"], "max_abs_diff_vs_x86_64": None,
               "max_abs_diff_vs_golden": None, "x86_64_error": ref.get("error"), "arm64_error": result.get("error")}
        rows.append(row)
        if "error" in result or "error" in ref:
            continue
        arm_probs, x86_probs = _by_task(result), _by_task(ref)
        row["rows"] = len(result["probs"])
        row["max_abs_diff_vs_x86_64"] = max(float(abs(a - b)) for task in x86_probs for a, b in zip(arm_probs[task], x86_probs[task]))
        if Path(result["model"]) in goldens:
            first, doc = goldens[Path(result["model"])]
            count = len(doc["inputs"]["categorical"])
            probs = np.asarray([arm_probs[task][first:first + count] for task in doc["tasks"]], dtype=np.float64).T  # (G, T)
            row["max_abs_diff_vs_golden"] = golden_max_abs(doc, probs)
        row.update(arm64_load_s=result["load_s"], arm64_predict_s=result["predict_s"],
                   x86_64_load_s=ref["load_s"], x86_64_predict_s=ref["predict_s"])
    return rows


def row_ok(row: dict) -> bool:
    diffs = [row["max_abs_diff_vs_x86_64"], row["max_abs_diff_vs_golden"]]
    return row["arm64_error"] is None and row["x86_64_error"] is None and all(d is None or d <= ARM64_TOLERANCE for d in diffs)


def _by_task(result: dict) -> dict[str, list[float]]:
    return {task: [row[t] for row in result["probs"]] for t, task in enumerate(result["tasks"])}


def check(models: list[Path], *, rows: int, data_dir: str | None, cache: Path, onnxruntime: str) -> dict:
    started = time.perf_counter()
    qemu = ensure_qemu()
    sysroot = ensure_sysroot(cache)
    site = ensure_device_site(cache, onnxruntime)
    prepared = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mome-arm64-") as tmp:
        work = Path(tmp)
        package = work / "package"
        install_checkout(package)
        if not models:
            models = build_default_models(work / "models", data_dir)
        missing = [str(m) for m in models if not m.is_file()]
        if missing:
            raise CheckError(f"model files {missing} do not exist; pass .mome/.onnx/.ort files")
        models = [m.resolve() for m in models]
        chosen = choose_inputs(models, rows=rows, data_dir=data_dir)
        inputs = work / "inputs.json"
        inputs.write_text(json.dumps({"categorical": chosen.categorical.tolist(),
                                      "numerical": [[float(v) for v in r] for r in chosen.numerical]}))
        script = ROOT / "scripts" / "device_predict.py"
        args = ["--inputs", str(inputs), *map(str, models)]
        run([sys.executable, str(script), *args, "--output", str(work / "x86.json")], what="x86_64 predictions")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": f"{package}:{site}", "QEMU_LD_PREFIX": str(sysroot), "OMP_NUM_THREADS": "1"}
        python = sysroot / "usr" / "bin" / f"python{ARM64_PYTHON}"
        arm_started = time.perf_counter()
        run([qemu, "-L", str(sysroot), str(python), "-s", str(script), *args, "--output", str(work / "arm64.json")],
            what="arm64 predictions under qemu", env=env,
            fix=f"if onnxruntime {onnxruntime} crashes under qemu, check with --onnxruntime {DEFAULT_ONNXRUNTIME} (runs under qemu 7.2)")
        arm_seconds = time.perf_counter() - arm_started
        x86, arm = (json.loads((work / name).read_text()) for name in ("x86.json", "arm64.json"))
    if arm["environment"]["machine"] != "aarch64":
        raise CheckError(f"the emulated Python reports machine {arm['environment']['machine']!r}, not aarch64; check the sysroot")
    installed = arm["environment"]["workstation_packages_installed"]
    if installed:  # the arm64 side stands for the device install: a leak would hide a dependency
        raise CheckError(f"the arm64 site holds {installed}, which the device install must not need; delete {site} and run again")
    results = compare(x86, arm, chosen.goldens)
    return {
        "ok": all(row_ok(r) for r in results),
        "tolerance": ARM64_TOLERANCE,
        "inputs": {"rows": int(len(chosen.categorical)), "census_rows": chosen.census_rows, "golden_rows": chosen.golden_rows,
                   "source": chosen.source},
        "x86_64": x86["environment"],
        "arm64": {**arm["environment"], "emulator": run([qemu, "--version"], what="qemu --version").splitlines()[0]},
        "seconds": {"setup": round(prepared - started, 1), "arm64_run": round(arm_seconds, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "results": results,
    }


def render(report: dict) -> str:
    lines = [f"inputs: {report['inputs']['rows']} rows: {report['inputs']['source']}",
             f"x86_64: Python {report['x86_64']['python']}, numpy {report['x86_64']['numpy']}, onnxruntime {report['x86_64']['onnxruntime']}",
             f"arm64:  Python {report['arm64']['python']}, numpy {report['arm64']['numpy']}, onnxruntime {report['arm64']['onnxruntime']} "
             f"({report['arm64']['machine']} under {report['arm64']['emulator']})",
             f"{'model':<22} {'path':<22} {'max|arm64-x86|':>15} {'max|arm64-golden|':>18} {'load+predict s: arm64':>22} {'x86_64':>7}"]
    for r in report["results"]:
        if r["arm64_error"] or r["x86_64_error"]:
            side = "arm64" if r["arm64_error"] else "x86_64"
            lines.append(f"{r['model']:<22} {r['path']:<22} FAILED on {side}: {r['arm64_error'] or r['x86_64_error']}")
            continue
        golden = "-" if r["max_abs_diff_vs_golden"] is None else f"{r['max_abs_diff_vs_golden']:.2e}"
        lines.append(f"{r['model']:<22} {r['path']:<22} {r['max_abs_diff_vs_x86_64']:>15.2e} {golden:>18} "
                     f"{r['arm64_load_s'] + r['arm64_predict_s']:>22.2f} {r['x86_64_load_s'] + r['x86_64_predict_s']:>7.3f}")
    verdict = "OK" if report["ok"] else "FAILED"
    lines.append(f"{verdict}: tolerance {report['tolerance']:g}; seconds: setup {report['seconds']['setup']}, "
                 f"arm64 run {report['seconds']['arm64_run']}, total {report['seconds']['total']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, nargs="*", help="model files (.mome, .onnx, .ort) of one model; none: build a tiny census model")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help=f"census-income test rows to predict (default {DEFAULT_ROWS}); 0: only the golden rows beside the models")
    parser.add_argument("--data-dir", default=os.environ.get("MOME_DATA_DIR") or None, help="folder holding census-income/ (default: MOME_DATA_DIR)")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("MOME_ARM64_CACHE", DEFAULT_CACHE)),
                        help=f"where the arm64 userland and wheels are kept (default {DEFAULT_CACHE}, or MOME_ARM64_CACHE)")
    parser.add_argument("--onnxruntime", default=DEFAULT_ONNXRUNTIME, help=f"onnxruntime version on the arm64 side (default {DEFAULT_ONNXRUNTIME})")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error(f"--rows {args.rows}: give 0 (golden rows only) or more rows")
    if platform.machine() != "x86_64":
        print(f"error: this check emulates arm64 from an x86_64 host, this is {platform.machine()}; run scripts/device_predict.py directly on an arm64 host", file=sys.stderr)
        return 2
    from mome_edge.errors import MomeError

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        report = check(args.models, rows=args.rows, data_dir=args.data_dir, cache=args.cache_dir, onnxruntime=args.onnxruntime)
    except (CheckError, MomeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
