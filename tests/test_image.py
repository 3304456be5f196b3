"""The image, really built: buildah (`--isolation chroot`) from a locally made Debian base.

No container registry is reachable here, so `deploy/image/local-base.sh` makes the base with
debootstrap (cached under ~/.cache/hpsearch/ between runs). The build sees this machine's pip
configuration (its mirrors, local wheel folders and CA bundle), so it installs exactly the lock
files from wherever this machine gets packages. Checked: the layers (a one-line code change
rebuilds only the last, small ones), then `hpsearch --help` and a small study inside the image,
whose best checkpoint is fetched with `hpsearch best --download` and loads in torch.

Slow: a cold build installs ~6 GB (several minutes); buildah's layer cache in
/var/lib/containers makes the next run take about a minute (`buildah rmi --all` frees it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Minutes cold: outside `make test` (its suite stays under ten minutes); `make test-image` runs it.
pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[1]
BASE = "localhost/hpsearch-base:bookworm"
TAG = "localhost/hpsearch-test:layers"
CONTEXT = ["Dockerfile", ".dockerignore", "pyproject.toml", "hpsearch", "deploy/image"]
SMOKE_STUDY = """
name: smoke
metric: val_accuracy
sampler: {type: random, seed: 0}
pruner: {type: none}
budget: {n_trials: 3}
objective:
  trainer: image_classification
  model: small_cnn
  dataset: {name: digits}
  epochs: 1
  max_train_batches: 3
  device: cpu
  cpu_threads: 1
  keep_checkpoints: 1
search_space:
  lr: {type: float, low: 0.001, high: 0.1, log: true}
"""


def _need_buildah() -> None:
    """Install buildah and debootstrap when root (as `make test-deps` does); else say how."""
    if shutil.which("buildah") and shutil.which("debootstrap"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "buildah", "debootstrap"], check=True, env=env
        )
        return
    message = "buildah and debootstrap are needed: apt-get install buildah debootstrap (as root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _pip_mounts() -> list[str]:
    """`-v` options that give the build this machine's pip configuration, read-only."""
    configs = [Path("/etc/pip.conf"), Path("/etc/xdg/pip"), Path.home() / ".config/pip"]
    mounts: dict[str, str] = {}
    for config in configs:
        if not config.exists():
            continue
        target = "/root/.config/pip" if config == Path.home() / ".config/pip" else str(config)
        mounts[str(config)] = target
        files = config.rglob("*") if config.is_dir() else [config]
        for text in (f.read_text(errors="replace") for f in files if f.is_file()):
            # Local indexes and wheel folders the configuration names (file:///opt/pypi, ...).
            for path in re.findall(r"(?:file://|=\s*|\s)(/[^\s'\"]+)", text):
                folder = Path(path)
                folder = folder if folder.is_dir() else folder.parent
                if folder.is_dir() and folder != Path("/"):
                    mounts.setdefault(str(folder), str(folder))
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")  # a proxy's CA, where there is one
    if bundle.is_file():
        mounts[str(bundle)] = str(bundle)
    return [f"--volume={source}:{target}:ro" for source, target in mounts.items()]


def _build(context: Path, tag: str) -> float:
    started = time.monotonic()
    result = subprocess.run(
        ["buildah", "bud", "--isolation", "chroot", "--layers", "--quiet",
         f"--build-arg=PYTHON_IMAGE={BASE}", *_pip_mounts(), "-t", tag, str(context)],
        capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return time.monotonic() - started


def _layers(tag: str) -> list[tuple[str, int, str]]:
    """(diff digest, size in bytes, the instruction) of each layer of the image, base first."""
    info = json.loads(
        subprocess.run(
            ["buildah", "inspect", "--type", "image", tag],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    store = Path("/var/lib/containers/storage/overlay-layers/layers.json")
    sizes = {layer.get("diff-digest"): layer.get("diff-size", 0) for layer in json.loads(
        store.read_text())}  # fmt: skip
    history = [h for h in info["OCIv1"]["history"] if not h.get("empty_layer")]
    digests = info["OCIv1"]["rootfs"]["diff_ids"]
    assert len(history) == len(digests)
    return [
        (d, int(sizes.get(d, 0)), re.sub(r"\s+", " ", h.get("created_by", "")))
        for d, h in zip(digests, history, strict=True)
    ]


def _show(title: str, layers: list[tuple[str, int, str]], seconds: float) -> None:
    print(f"\n{title} (built in {seconds:.0f} s):")
    for _, size, step in layers:
        print(f"  {size / 1e6:9.1f} MB  {step[:90]}")
    print(f"  {sum(s for _, s, _ in layers) / 1e6:9.1f} MB  in all")


@pytest.fixture(scope="module")
def built() -> Iterator[None]:
    _need_buildah()
    subprocess.run(["bash", str(ROOT / "deploy/image/local-base.sh"), BASE], check=True)
    yield
    subprocess.run(["buildah", "rmi", "--force", TAG], capture_output=True)


def test_a_code_change_rebuilds_only_the_last_layer_and_the_image_runs_a_study(
    built: None, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    for name in CONTEXT:
        source, target = ROOT / name, context / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    seconds = _build(context, TAG)
    before = _layers(TAG)
    _show("image layers", before, seconds)

    # The code is the last layers (the wheel, and its install): megabytes, not gigabytes.
    *deps, wheel, install = before
    assert "hpsearch-*.whl" in install[2]
    assert wheel[1] + install[1] < 20e6
    assert max(size for _, size, _ in deps) > 100e6  # torch and its libraries sit below

    errors = context / "hpsearch" / "errors.py"
    errors.write_text(errors.read_text() + "# a one-line change\n")
    seconds = _build(context, TAG)
    after = _layers(TAG)
    _show("after a one-line code change", after, seconds)
    assert [d for d, _, _ in after[:-2]] == [d for d, _, _ in deps]  # reused, not rebuilt
    assert after[-1][0] != install[0]
    assert after[-1][1] + after[-2][1] < 20e6

    _run_a_study_inside(tmp_path)


def _run_a_study_inside(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "smoke.yaml").write_text(SMOKE_STUDY)
    container = subprocess.run(
        ["buildah", "from", "--quiet", TAG], capture_output=True, text=True, check=True
    ).stdout.strip()
    script = (
        "set -e; hpsearch --help | head -1; "
        "hpsearch run /studies/smoke.yaml --artifacts /artifacts -q; "
        "hpsearch best /studies/smoke.yaml --download /tmp/best; "
        'python -c \'import glob, torch; (p,) = glob.glob("/tmp/best/*.pt"); '
        'print("loaded", sorted(torch.load(p, weights_only=True)))\''
    )
    try:
        result = subprocess.run(
            ["buildah", "run", "--isolation", "chroot", "--user", "10001:10001",
             f"--volume={studies}:/studies:ro", "--env=HPSEARCH_STORAGE=sqlite:////tmp/s.db",
             "--env=HPSEARCH_ARTIFACT_STORE=/artifacts/shared", container, "--",
             "sh", "-c", script],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("usage: hpsearch")
    assert "# saved trial" in out
    assert "loaded ['classes', 'metrics', 'model', 'options', 'preprocessing']" in out
