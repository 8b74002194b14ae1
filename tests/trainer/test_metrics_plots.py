"""The training plots' helpers against hand-computed values, and the PNGs they write from hand-made records."""
import math

import pytest

from mrt.metrics_log import MetricsLogger, ema, plot_metrics, series


def test_ema_is_bias_corrected():
    # beta 0.5: m1 = 0.5 -> 0.5 / 0.5 = 1; m2 = 0.25 -> 0.25 / 0.75 = 1/3; m3 = 0.125 + 0.5 -> 0.625 / 0.875 = 5/7.
    assert ema([1.0, 0.0, 1.0], beta=0.5) == pytest.approx([1.0, 1 / 3, 5 / 7])
    # A constant series stays at its value from the first point (no pull toward 0).
    assert ema([0.3] * 5, beta=0.9) == pytest.approx([0.3] * 5)
    assert ema([0.2, 0.4], beta=0.0) == pytest.approx([0.2, 0.4])
    with pytest.raises(ValueError):
        ema([1.0], beta=1.0)


def test_series_skips_missing_and_non_finite():
    recs = [{"step": 1, "reward": 0.5}, {"step": 2}, {"step": 3, "reward": "nan"}, {"step": 4, "reward": 1},
            {"step": 5, "reward": math.inf}]
    assert series(recs, "reward") == ([1, 4], [0.5, 1.0])


def _records(steps=30, format_reward=False):
    recs = [{"kind": "eval", "step": 0, "eval/accuracy": 0.2, "eval/regret": 1.0, "eval/regret_normalized": 0.8}]
    for s in range(1, steps + 1):
        acc = 0.1 + 0.01 * s
        recs.append({"kind": "train", "step": s, "reward": acc + (0.05 if format_reward else 0.0), "accuracy": acc,
                     "regret": 1.2 - 0.01 * s, "regret_normalized": 0.9 - 0.005 * s, "zero_variance_groups": 0.5,
                     "progress/episode_0": 0.1, "episode_share/0": 0.6, "episode_share/1": 0.3 if s < 12 else 0.0,
                     "episode_share/2": 0.0})
        if s < 6 or 9 < s < 12:     # episode 1 only at steps 1-5 and 10-11: two runs of steps, a gap between
            recs[-1]["progress/episode_1"] = -0.05
        if s % 10 == 0:
            recs.append({"kind": "eval", "step": s, "eval/accuracy": 0.2 + 0.01 * s, "eval/regret": 1.0 - 0.01 * s,
                         "eval/regret_normalized": 0.8 - 0.01 * s})
    return recs


def _lines(fig_axes):
    return [[ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")] for ax in fig_axes]


def test_plots_panels(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    saved = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: saved.append(fig))   # keep the figures to inspect them
    paths = plot_metrics(_records(), str(tmp_path))
    monkeypatch.setattr(plt, "close", real_close)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["reward_accuracy.png", "progress_by_episode.png", "regret.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    reward, progress, regret = (_lines(f.axes) for f in saved)
    # reward == accuracy: accuracy is not drawn over it; held-out accuracy is a curve of 4 evaluations.
    assert reward[0] == ["reward (EMA 0.9)"] and "= accuracy" in saved[0].axes[0].get_title()
    assert reward[1] == ["held-out accuracy"] and len(saved[0].axes[1].get_lines()[0].get_xdata()) == 4
    assert reward[2] == ["groups with zero reward variance (EMA 0.9)"]
    ema_label = "(EMA 0.9 within runs of steps)"
    assert progress[0] == [f"episode 0 {ema_label}", f"episode 1 {ema_label}"]
    assert progress[1] == ["episode 0", "episode 1"]          # the share of traces that have episode j
    assert "(never: episode 2)" in saved[1].axes[1].get_title()  # an index no trace had is named, not drawn
    # Episode 1: markers at its 7 steps, and one EMA line per run of consecutive steps, none across the gap.
    ep1 = [ln for ln in saved[1].axes[0].get_lines() if ln.get_color() == "C1"]
    markers = [ln for ln in ep1 if ln.get_marker() == "o"]
    lines = [ln for ln in ep1 if ln.get_marker() != "o"]
    assert [list(ln.get_xdata()) for ln in markers] == [[1, 2, 3, 4, 5, 10, 11]]
    assert [list(ln.get_xdata()) for ln in lines] == [[1, 2, 3, 4, 5], [10, 11]]
    assert regret == [["training traces (EMA 0.9)", "held-out"]] * 2
    # The smoothed reward line is the EMA of the raw one.
    raw, smooth = saved[0].axes[0].get_lines()[:2]
    assert list(smooth.get_ydata()) == pytest.approx(ema(list(raw.get_ydata())))
    for f in saved:
        real_close(f)


def test_accuracy_drawn_when_it_differs(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    saved = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: saved.append(fig))
    recs = _records(format_reward=True)
    for r in recs:
        if r["kind"] == "train":
            r["reward_kept"] = 0.5          # dynamic sampling: the kept groups' reward differs from the policy's
    plot_metrics(recs, str(tmp_path))
    monkeypatch.setattr(plt, "close", real_close)
    assert _lines(saved[0].axes)[0] == ["reward (EMA 0.9)", "accuracy (EMA 0.9)",
                                        "reward of the kept groups (EMA 0.9)"]
    for f in saved:
        real_close(f)


def test_logger_close_writes_plots(tmp_path):
    log = MetricsLogger(str(tmp_path), progress_bar=False)
    for rec in _records(5):
        log.log(rec, advance=False)
    paths = log.close()
    assert len(paths) == 3 and all((tmp_path / p.rsplit("/", 1)[-1]).exists() for p in paths)
