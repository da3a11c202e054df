"""Real allocation traces in the fit environment and in the arena (issue 7, real half)."""

import pytest

from torch_tier import trace
from torch_tier.fit.env import SERVED_REWARD, FitEnv
from torch_tier.fit.evaluate import BASELINES, evaluate
from torch_tier.fit.real import FITS, cell_bytes_for, cell_episodes, episode_returns, fragmentation, train_dqn
from torch_tier.fit.rules import RulePolicy
from torch_tier.fit.trace import peak_live_bytes, save_trace, trace_to_cells


@pytest.fixture
def cnn_events(cnn, one_thread):
    model, x = cnn
    return trace.trace(model, x, passes=2)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_recorded_trace_replays_in_the_cell_env_with_each_rule(cnn_events, tmp_path, suffix):
    path = tmp_path / f"cnn{suffix}"
    save_trace(path, cnn_events)
    allocations = sum(e.op == "alloc" for e in cnn_events)
    # a roomy page (peak live fills half of it): every rule serves the whole trace
    options = {"generator": f"trace:{path}", "page_size": 64, "history": 4, "fill": 0.5}
    assert FitEnv(**options).horizon >= allocations  # the horizon does not cut the trace
    for rule in BASELINES:
        assert evaluate(RulePolicy(rule), options, episodes=1, seed=0)[0] == pytest.approx(SERVED_REWARD * allocations)


def test_fragmentation_of_a_small_models_trace(cnn_events):
    report = fragmentation(cnn_events, tight=(1.05, 2.0))
    assert [f.fit for f in report] == list(FITS)
    peak = peak_live_bytes(cnn_events)
    for f in report:
        assert f.peak_live == peak and f.allocations == sum(e.op == "alloc" for e in cnn_events)
        assert f.extent_ratio >= 1.0
        assert f.first_failure[2.0] is None  # twice the peak live bytes holds the trace
    by_fit = {f.fit: f for f in report}
    assert by_fit["first"].extent_ratio <= by_fit["worst"].extent_ratio


def test_cell_episodes_hold_the_capacity_factor(cnn_events):
    for factor, episode in zip((1.1, 1.5), cell_episodes(cnn_events, 64, (1.1, 1.5))):
        cells = trace_to_cells(cnn_events, 64, cell_bytes=cell_bytes_for(cnn_events, 64, factor))
        assert peak_live_bytes(cells) <= 64 / factor
        assert [(r.op, r.id, r.size) for r in episode] == [(e.op, e.id, e.size) for e in cells]


def test_dqn_trained_on_one_trace_runs_on_another(cnn_events, bert):
    """Each held-out episode runs to the end of its own trace, not to a horizon
    taken from the training traces: at 1.25 and 2 times the peak live cells
    every rule serves all of this BERT trace, and so does the policy."""
    model, x = bert
    bert_events = trace.trace(model, x, passes=1)
    held_out = cell_episodes(bert_events, 64, (1.25, 2.0))
    policy = train_dqn(cell_episodes(cnn_events, 64, (1.25, 2.0)), 64, 4, steps=300, seed=0)
    whole = SERVED_REWARD * sum(e.op == "alloc" for e in bert_events)
    assert episode_returns(policy, held_out, 64, 4).tolist() == pytest.approx([whole, whole])
