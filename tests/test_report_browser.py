"""report.html in a real headless browser (Debian's Chromium; skipped where it is not installed:
.ci/run installs it): the page loads offline, every figure decodes and paints."""

from __future__ import annotations

import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_paints_in_headless_chromium(tmp_path):
    import matplotlib.image as mpimg
    import numpy as np

    from rollsift.measure.report import render
    from test_compare import _pair

    _, runs = _pair(tmp_path, [(0, 0.40, 0, 0.1), (10, 0.50, 1000, 100), (20, 0.60, 2000, 200)],
                    [(0, 0.40, 0, 0.1), (10, 0.55, 500, 50), (20, 0.61, 1000, 100)])
    page = render([cfg.out for _, _, cfg in runs], tmp_path / "rep")
    shot = tmp_path / "shot.png"
    # the flags the machine notes give for a sandbox without network, as root
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1300,1400",
                           f"--screenshot={shot}", f"file://{page}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    img = mpimg.imread(str(shot))[..., :3]  # [H, W, 3] in [0, 1]
    ink = (img < 0.9).any(axis=2)
    assert ink.mean() > 0.01  # text, tables and plots, not a blank or broken page
    rows = ink.mean(axis=1)
    assert (rows[300:] > 0.02).sum() > 200  # the figures below the table painted (hundreds of inked rows)
    coloured = (np.abs(img[..., 0] - img[..., 2]) > 0.3).mean()
    assert coloured > 1e-4  # coloured plot lines: the PNGs decoded
