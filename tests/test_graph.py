"""capture(): nodes, bytes, lifetimes, edges; footprints; the cost model and the simulated tier."""

import random
import time

import numpy as np
import pytest
import torch

import torch_tier as tt
from torch_tier import cost_model, graph, zoo
from torch_tier.graph import Stream
from torch_tier.graph_capture import capture


class Twice(torch.nn.Module):
    """A block applied twice, plus a weight shared by two modules."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.block = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU())
        self.head = torch.nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        h = self.embed(ids)
        h = self.block(h) + self.block(h)  # own code allocates the sum
        return self.head(h)


@pytest.fixture(scope="module")
def bert_graph():
    from conftest import small_bert

    model, x = small_bert()
    return model, x, capture(model, x, repeats=3)


def test_cnn_nodes_in_execution_order(cnn):
    model, x = cnn
    g = capture(model, x, repeats=3)
    assert [n.path for n in g.nodes] == ["", "0", "1", "2", "3", "4", "5", "6", "7"]
    assert all(n.calls == 1 for n in g.nodes)
    params = sum(t.untyped_storage().nbytes() for t in list(model.parameters()) + list(model.buffers()))
    assert sum(n.weight_bytes for n in g.nodes) == params
    conv = g.nodes[1]
    assert conv.alloc_bytes >= 2 * 16 * 32 * 32 * 4 and conv.activation_bytes >= 2 * 16 * 32 * 32 * 4
    assert conv.input_bytes == x.nbytes and conv.dram_time > 0
    assert graph.Edge(graph.EXTERNAL, 1, x.nbytes) in g.edges
    assert graph.Edge(1, 2, 2 * 16 * 32 * 32 * 4) in g.edges  # conv -> batchnorm
    assert all(0 < b.alloc < b.free <= g.events for b in g.buffers)
    assert g.fingerprint == tt.fingerprint(model)


def test_bert_attention_code_is_a_node(bert_graph):
    _, _, g = bert_graph
    attention = {n.path: n for n in g.nodes}["encoder.layer.0.attention.self"]
    assert not attention.leaf and attention.alloc_bytes > 0  # scores, softmax, context
    assert attention.transient_peak_bytes > 0


def test_repeated_and_shared_modules():
    model = Twice().eval()
    ids = torch.randint(0, 50, (4, 8))
    g = capture(model, ids, repeats=2)
    nodes = {n.path: n for n in g.nodes}
    assert nodes["block.0"].calls == 2 and nodes["block.1"].calls == 2
    assert nodes[""].alloc_bytes >= 4 * 8 * 16 * 4  # the root's own sum
    assert nodes["embed"].weight_bytes == 50 * 16 * 4 and nodes["head"].weight_bytes == 0  # tied
    read = nodes["embed"].weight_read
    assert read.random and read.accesses == ids.numel() and read.bytes == ids.numel() * 16 * 4


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_decoders_capture(name):
    work = zoo.build(name, seq_len=16, width=1 / 6, depth=1 / 6)
    g = capture(work.model, work.inputs, repeats=1)
    assert len(g.nodes) > 10 and g.edges and g.buffers
    with tt.enable(g.policy([tt.Placement("pm", "pm")] * len(g.nodes)), work.model, pm="sim"):
        pass  # the graph's nodes are a valid policy for the model


def test_save_load_round_trip(cnn, tmp_path):
    model, x = cnn
    g = capture(model, x, repeats=1)
    g.save(tmp_path / "g.json")
    assert graph.TierGraph.load(tmp_path / "g.json") == g
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json: not a torch-tier-graph"):
        graph.TierGraph.load(tmp_path / "bad.json")


def test_footprint(bert_graph):
    model, _, g = bert_graph
    weights = sum(n.weight_bytes for n in g.nodes)
    all_dram = g.footprint(g.policy())
    assert all_dram["pm"] == 0 and all_dram["dram"] > weights
    all_pm = g.footprint(g.policy([tt.Placement("pm", "pm")] * len(g.nodes)))
    assert all_pm == {"dram": 0, "pm": all_dram["dram"]}
    weights_pm = g.footprint(g.policy([tt.Placement("pm", "dram")] * len(g.nodes)))
    assert weights_pm["pm"] == weights and weights_pm["dram"] == all_dram["dram"] - weights


def test_cost_model_prices_streams_by_the_device_figures():
    cost = cost_model.cost_model("optane-100")
    pm, dram = cost.pm, cost.dram
    mib = 1 << 20
    assert cost.write_extra(mib) == pytest.approx(mib / (pm.write_bw_gbs * 1e9) - mib / (dram.write_bw_gbs * 1e9))
    assert cost.read_extra(mib) == pytest.approx(mib / (pm.read_bw_gbs * 1e9) - mib / (dram.read_bw_gbs * 1e9))
    # 1000 random 64-byte rows: each moves a whole access granule and pays latency, MEMORY_PARALLELISM in flight
    rows = Stream(64 * 1000, accesses=1000, random=True)
    moved = 1000 * max(64, pm.granularity_bytes)
    in_pm = moved / (pm.read_bw_gbs * 1e9) + 1000 * pm.rand_latency_ns * 1e-9 / cost_model.MEMORY_PARALLELISM
    assert cost.seconds(rows, pm) == pytest.approx(in_pm)


def test_overlap_hides_at_most_its_share_of_the_extra(bert_graph):
    _, _, g = bert_graph
    costs = cost_model.graph_costs(g, "optane-100")
    all_pm = np.ones((len(g.nodes), 2), dtype=np.int8)
    linear = costs.linear(all_pm)
    extras = costs.extras(all_pm)
    assert np.all(extras >= (1 - cost_model.OVERLAP) * linear - 1e-15) and np.all(extras <= linear + 1e-15)
    hidden = linear - extras
    assert np.allclose(hidden, np.minimum(cost_model.OVERLAP * linear, costs.compute))
    assert cost_model.predict(g, g.policy([tt.Placement("pm", "pm")] * len(g.nodes))) == \
        pytest.approx(g.base_time + extras.sum())


class Jittery(torch.nn.Module):
    """A linear layer that sleeps: the first `slow_first` forwards 90, 80, 70, ... ms (a warm-up that
    fades, each forward at least 10% faster than the one before), later ones 1 to 3 ms at random."""

    def __init__(self, slow_first: int = 0):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)
        self.calls, self.slow_first = 0, slow_first
        self.rng = random.Random(0)

    def forward(self, x):
        self.calls += 1
        time.sleep(0.1 - 0.01 * self.calls if self.calls <= self.slow_first else self.rng.uniform(0.001, 0.003))
        return self.linear(x)


def test_capture_times_until_the_median_is_known():
    x = torch.randn(2, 8)
    loose = capture(Jittery(), x, repeats=5, precision=1.0).metadata["timing"]
    assert loose["repeats"] == 5 and loose["reached"]
    tight = capture(Jittery(), x, repeats=5, precision=0.03).metadata["timing"]
    assert tight["repeats"] > 5
    low, high = tight["interval"]
    assert low <= tight["median"] <= high and tight["precision"] == pytest.approx((high - low) / 2 / tight["median"])
    assert tight["reached"] == (tight["precision"] <= 0.03)


def test_capture_drops_slow_first_forwards():
    graph = capture(Jittery(slow_first=9), torch.randn(2, 8), repeats=5, precision=1.0)
    assert graph.metadata["timing"]["warmup"] >= 8  # the traced forward was the first
    assert graph.base_time < 0.009  # none of the slow forwards (10 ms and more) was timed
    assert "±" in graph.summary().splitlines()[0]
