"""ARM64 check: the device install on a 64-bit ARM Linux userland (qemu-user), predictions
equal to the x86_64 ones.

    python scripts/check_arm64.py [MODEL ...] [--rows 200] [--data-dir DIR] [--json REPORT.json]
    make check-arm64 [ARM64_MODELS="a.mome a.onnx a.ort"]

Steps (each cached under --cache-dir, default ~/.cache/mome-edge-arm64; Debian 12 x86_64 as root):
  1. qemu-user-static from apt when `qemu-aarch64-static` is missing.
  2. A Debian bookworm arm64 userland: `dpkg --add-architecture arm64`, `apt-get download` of
     python3.11-minimal, its stdlib and the C/C++ runtime libraries, `dpkg -x` into a sysroot.
  3. The device install's dependencies (pyproject's base `dependencies`, onnxruntime pinned to
     --onnxruntime) as aarch64 wheels: `pip install --platform manylinux... --only-binary=:all:
     --target DIR`; then this checkout, fresh on every run (`pip install --no-deps --target`).
  4. Inputs: golden rows beside a model (MODEL.golden.json, read by scripts/golden_rows.py)
     when present, else the first --rows census-income test rows encoded for the models.
  5. scripts/device_predict.py runs every device path of every model, once with this Python
     (x86_64) and once with the arm64 Python under qemu-aarch64-static; every probability of
     the arm64 run must equal the x86_64 one (and the golden outputs, when given) within
     ARM64_TOLERANCE.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from golden_rows import DEFAULT_ROWS, census_rows, find_golden, read_golden  # noqa: E402

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
# the exports built when no MODEL is given: (file name, extra `mome-edge export` flags).
# The lead points this at the new modes (`--mode speed`, `--mode memory`) when they land.
DEFAULT_EXPORTS = (("mome.onnx", ["--ort"]), ("mome-dense.onnx", ["--experts", "dense"]))
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


def choose_inputs(models: list[Path], *, rows: int, data_dir: str | None):
    """(categorical, numerical, golden outputs by model or {}, description)."""
    goldens = {model: find_golden(model) for model in models}
    found = {model: read_golden(path) for model, path in goldens.items() if path is not None}
    if found:
        first = next(iter(found.values()))
        expected = {m: g.outputs for m, g in found.items()
                    if g.outputs is not None and g.categorical.shape == first.categorical.shape
                    and (g.categorical == first.categorical).all() and (g.numerical == first.numerical).all()}
        return first.categorical, first.numerical, expected, f"golden rows {first.source}"
    cat, num, source = census_rows(models[0], rows=rows, data_dir=data_dir)
    return cat, num, {}, source


# --- 5: run both sides, compare ---------------------------------------------------------------
def compare(x86: dict, arm: dict, goldens: dict) -> list[dict]:
    """One row per (model, path): the largest differences, or the error of the side that failed."""
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
        golden = goldens.get(Path(result["model"]))
        if golden is not None:
            row["max_abs_diff_vs_golden"] = max(float(abs(a - b)) for task, values in golden.items() for a, b in zip(arm_probs[task], values))
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
        cat, num, goldens, source = choose_inputs(models, rows=rows, data_dir=data_dir)
        inputs = work / "inputs.json"
        inputs.write_text(json.dumps({"categorical": cat.tolist(), "numerical": [[float(v) for v in r] for r in num]}))
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
    results = compare(x86, arm, goldens)
    return {
        "ok": all(row_ok(r) for r in results),
        "tolerance": ARM64_TOLERANCE,
        "inputs": {"rows": int(len(cat)), "source": source},
        "x86_64": x86["environment"],
        "arm64": {**arm["environment"], "emulator": run([qemu, "--version"], what="qemu --version").splitlines()[0]},
        "seconds": {"setup": round(prepared - started, 1), "arm64_run": round(arm_seconds, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "results": results,
    }


def render(report: dict) -> str:
    lines = [f"inputs: {report['inputs']['rows']} rows ({report['inputs']['source']})",
             f"x86_64: Python {report['x86_64']['python']}, numpy {report['x86_64']['numpy']}, onnxruntime {report['x86_64']['onnxruntime']}",
             f"arm64:  Python {report['arm64']['python']}, numpy {report['arm64']['numpy']}, onnxruntime {report['arm64']['onnxruntime']} "
             f"({report['arm64']['machine']} under {report['arm64']['emulator']})",
             f"{'model':<22} {'path':<22} {'max|arm64-x86|':>15} {'max|arm64-golden|':>18} {'arm64 load+predict s':>21}"]
    for r in report["results"]:
        if r["arm64_error"] or r["x86_64_error"]:
            side = "arm64" if r["arm64_error"] else "x86_64"
            lines.append(f"{r['model']:<22} {r['path']:<22} FAILED on {side}: {r['arm64_error'] or r['x86_64_error']}")
            continue
        golden = "-" if r["max_abs_diff_vs_golden"] is None else f"{r['max_abs_diff_vs_golden']:.2e}"
        lines.append(f"{r['model']:<22} {r['path']:<22} {r['max_abs_diff_vs_x86_64']:>15.2e} {golden:>18} "
                     f"{r['arm64_load_s'] + r['arm64_predict_s']:>21.2f}")
    verdict = "OK" if report["ok"] else "FAILED"
    lines.append(f"{verdict}: tolerance {report['tolerance']:g}; seconds: setup {report['seconds']['setup']}, "
                 f"arm64 run {report['seconds']['arm64_run']}, total {report['seconds']['total']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, nargs="*", help="model files (.mome, .onnx, .ort) of one model; none: build a tiny census model")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help=f"census test rows when no golden file is found (default {DEFAULT_ROWS})")
    parser.add_argument("--data-dir", default=os.environ.get("MOME_DATA_DIR") or None, help="folder holding census-income/ (default: MOME_DATA_DIR)")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("MOME_ARM64_CACHE", DEFAULT_CACHE)),
                        help=f"where the arm64 userland and wheels are kept (default {DEFAULT_CACHE}, or MOME_ARM64_CACHE)")
    parser.add_argument("--onnxruntime", default=DEFAULT_ONNXRUNTIME, help=f"onnxruntime version on the arm64 side (default {DEFAULT_ONNXRUNTIME})")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows {args.rows}: give at least 1 row")
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
