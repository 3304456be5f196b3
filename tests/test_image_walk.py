"""The image scanner walks only the dataset (issue 23, N4): no link out of it or round a loop,
only regular files (others skipped and counted in one warning), never a hang, and it stops on
the first SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from data_factory import make_image_folder

from hpsearch.train.images import scan_folder


def _classes(root: Path) -> dict[str, int]:
    scan = scan_folder(root)
    counts = dict.fromkeys(scan.classes, 0)
    for _, label in scan.files:
        counts[scan.classes[label]] += 1
    return counts


def test_links_out_of_a_class_or_round_a_loop_are_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A `dog/loop -> ..` link made "dog" hold every cat; a deeper loop raised ELOOP."""
    root = tmp_path / "data"
    make_image_folder(root, classes=("cat", "dog"), per_class=5)
    outside = tmp_path / "outside"
    make_image_folder(outside, classes=("x", "y"), per_class=4)
    dog = root / "dog"
    (dog / "loop").symlink_to("..")  # the dataset root: every class again
    (dog / "sub").mkdir()
    (dog / "sub" / "deeper").symlink_to("../..")  # a loop two levels down
    (dog / "self").symlink_to(".")
    (dog / "cats").symlink_to("../cat")  # another class
    (dog / "away").symlink_to(outside / "x")  # out of the dataset
    (dog / "away.png").symlink_to(outside / "x" / "000.png")
    (dog / "a").symlink_to("b")
    (dog / "b").symlink_to("a")  # a link loop: ELOOP
    (dog / "c.png").symlink_to("c.png")
    (dog / "inside").mkdir()
    (dog / "inside" / "dup.png").symlink_to("../000.png")  # a file link inside: kept
    with caplog.at_level(logging.WARNING):
        counts = _classes(root)
    assert counts == {"cat": 5 + 3, "dog": 5 + 1}  # make_image_folder's extras are in "cat"
    warnings = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1
    assert "links out of their folder or into a loop" in warnings[0].getMessage()


SCAN = """
import logging, sys
from pathlib import Path
from hpsearch.train.images import scan_folder
logging.basicConfig(level=logging.WARNING, format="%(message)s")
scan = scan_folder(Path(sys.argv[1]))
print(sorted((scan.classes[label], rel) for rel, label in scan.files))
"""


def test_fifos_and_sockets_named_as_images_are_skipped_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_image_folder(root, classes=("cat", "dog"), per_class=5)
    os.mkfifo(root / "dog" / "fifo.png")
    os.mkfifo(root / "cat" / "pipe.jpg")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "dog" / "sock.png"))
        # In a process of its own: opening the FIFO blocked for ever (a hang guard, not a timing)
        done = subprocess.run(
            [sys.executable, "-c", SCAN, str(root)],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    files = done.stdout
    assert files.count("'cat'") == 8
    assert files.count("'dog'") == 5
    assert "fifo" not in files
    assert "pipe" not in files
    assert "sock" not in files
    (warning,) = [line for line in done.stderr.splitlines() if "skipped" in line]
    assert "3 not regular files (FIFOs, devices, sockets)" in warning


def test_init_on_a_folder_with_a_fifo_ends_and_stops_on_the_first_sigterm(tmp_path: Path) -> None:
    """A FIFO named `*.png` hung `init` for ever, and the first SIGTERM did not stop it."""
    root = tmp_path / "data"
    make_image_folder(root, classes=("cat", "dog"), per_class=5)
    os.mkfifo(root / "dog" / "fifo.png")
    process = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "init", str(root), "-o", str(tmp_path / "s.yaml"),
         "--budget", "15s", "--max-epochs", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:  # the scan starts right after this line
        if "reading" in line:
            break
    process.send_signal(signal.SIGTERM)  # once
    try:
        process.wait(timeout=120)  # a hang guard, not a speed check
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("init did not stop on the first SIGTERM")
    assert process.returncode in (0, 143)
