"""Backfill windows and the choice of a pilot shape that fits them (backends/backfill.py)."""

from __future__ import annotations

from backends.backfill import Choice, Shape, Window, after_taking, choose, claimed, per_node

DEFAULT = Shape(1, 60)


def test_the_shape_that_fills_a_window_is_chosen_and_the_reason_names_the_window():
    windows = [Window(8, 47 * 60, "partition debug")]
    shapes = [Shape(1, 10), Shape(8, 30), Shape(8, 47), Shape(8, 60), Shape(16, 10)]
    choice = choose(shapes, windows, DEFAULT)
    assert choice == Choice(
        Shape(8, 47),
        windows[0],
        "8 nodes x 47 min fits the backfill window of 8 nodes for 47 min on partition debug",
    )


def test_of_a_staircase_the_step_wasting_least_wins():
    # 8 nodes for 20 min, or 2 of them for 3 hours.
    windows = [Window(8, 20 * 60, "partition debug"), Window(2, 180 * 60, "partition debug")]
    choice = choose([Shape(8, 15), Shape(2, 170)], windows, DEFAULT)
    assert choice.shape == Shape(2, 170)  # 20 node-minutes wasted against 40
    assert choice.window == windows[1]
    assert "2 nodes for 180 min on partition debug" in choice.reason


def test_a_tie_goes_to_the_bigger_shape_then_the_callers_order():
    endless = [Window(4, None, "queue default")]
    # Against a window with no end, waste is the idle nodes over the shape's own time.
    choice = choose([Shape(2, 30), Shape(4, 30), Shape(4, 60)], endless, DEFAULT)
    assert choice.shape == Shape(4, 60)
    assert (
        choice.reason
        == "4 nodes x 60 min fits the backfill window of 4 nodes (no known end) on queue default"
    )
    first = choose([Shape(2, 30), Shape(3, 20)], [Window(6, 1800.0)], DEFAULT)
    assert first.shape == Shape(2, 30)  # both waste 120 node-minutes, both 60 node-minutes


def test_without_information_the_default_stands_and_says_so():
    choice = choose([Shape(8, 30)], None, DEFAULT)
    assert (choice.shape, choice.window) == (DEFAULT, None)
    assert choice.reason == (
        "kept the default 1 node x 60 min: the scheduler gives no backfill information"
    )


def test_no_idle_nodes_and_nothing_that_fits_are_told_apart():
    none_idle = choose([Shape(1, 5)], [], DEFAULT)
    assert none_idle.shape == DEFAULT
    assert none_idle.reason.endswith("the scheduler reports no idle nodes")
    too_big = choose([Shape(4, 60), Shape(2, 120)], [Window(2, 3000.0, "partition short")], DEFAULT)
    assert (too_big.shape, too_big.window) == (DEFAULT, None)
    assert too_big.reason.endswith(
        "no candidate fits a backfill window (the widest is 2 nodes for 50 min on partition short)"
    )


def test_waiting_jobs_cut_the_idle_nodes_into_a_staircase():
    # 10 idle nodes; a 4-node job expected in 30 min, a 6-node one in 2 hours; limit 1 day.
    windows = claimed(10, [(7200.0, 6), (1800.0, 4)], 86400.0, "partition batch")
    assert windows == [
        Window(10, 1800.0, "partition batch"),
        Window(6, 7200.0, "partition batch"),
    ]
    # Nothing waits: the idle nodes are free up to the partition's limit (or without end).
    assert claimed(3, [], 3600.0, "p") == [Window(3, 3600.0, "p")]
    assert claimed(3, [], None, "p") == [Window(3, None, "p")]
    # A job due now takes its nodes at once; a limit shorter than a claim caps it.
    assert claimed(4, [(-5.0, 1), (9000.0, 1)], 3600.0, "p") == [Window(3, 3600.0, "p")]
    assert claimed(0, [(60.0, 1)], None, "p") == []


def test_nodes_each_free_for_their_own_time_make_a_staircase():
    windows = per_node([600.0, 1800.0, None, 1800.0, 0.0], "queue default")
    assert windows == [
        Window(4, 600.0, "queue default"),
        Window(3, 1800.0, "queue default"),
        Window(1, None, "queue default"),
    ]
    assert per_node([], "queue default") == []


def test_windows_after_a_pilot_took_its_nodes():
    windows = [Window(8, 3600, "partition batch"), Window(2, None, "partition debug")]
    assert after_taking(windows, 2) == [Window(6, 3600, "partition batch")]
    assert after_taking(windows, 0) == windows
