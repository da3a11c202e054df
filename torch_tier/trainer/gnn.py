"""A small message-passing graph neural network over a TierGraph, in plain torch.

Why plain torch and not PyTorch Geometric or DGL: the graphs are small (tens
to a few hundred nodes, one per placed module) and fixed for a whole
training run, so all a layer needs is a mean over neighbours, which
`index_add_` does over the edge list in a few lines. A graph library would
add a compiled dependency pinned to torch versions for nothing we use.

Each layer mixes a node with three neighbourhoods: the nodes whose outputs it
reads (dataflow in), the nodes that read its outputs (dataflow out), and its
neighbours in execution order (so nodes no dataflow edge touches, such as a
module's own code, still see their context), plus the mean of the whole graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..graph import TierGraph
from .budget import Budget

MAX_TYPES = 24  # most frequent module types with their own one-hot column; the rest share one


@dataclass(frozen=True)
class Neighbours:
    """The three relations as sparse (nodes x nodes) matrices that average a node's sources."""

    relations: tuple[torch.Tensor, ...]

    @classmethod
    def of(cls, graph: TierGraph) -> "Neighbours":
        n = len(graph.nodes)
        flow = [(e.src, e.dst) for e in graph.edges if e.src >= 0 and e.src != e.dst]
        order = [(i, i + 1) for i in range(n - 1)] + [(i + 1, i) for i in range(n - 1)]
        return cls(tuple(_averaging(pairs, n) for pairs in (flow, [(d, s) for s, d in flow], order)))

    def mean(self, h: torch.Tensor) -> list[torch.Tensor]:
        """For `h` (..., nodes, d): each relation's mean over a node's sources (zero when it has none)."""
        by_node = h.movedim(-2, 0)
        flat = by_node.reshape(by_node.shape[0], -1)
        return [torch.sparse.mm(a, flat).reshape(by_node.shape).movedim(0, -2) for a in self.relations]


def _averaging(pairs: list[tuple[int, int]], n: int) -> torch.Tensor:
    """Sparse A with A[dst, src] = 1 / (sources of dst), summed over repeated pairs."""
    matrix = torch.zeros(n, n)
    for src, dst in pairs:
        matrix[dst, src] += 1.0
    return (matrix / matrix.sum(dim=1, keepdim=True).clamp(min=1.0)).to_sparse()


def node_features(graph: TierGraph, budget: Budget, item_costs: np.ndarray) -> torch.Tensor:
    """(nodes, features), each numeric column standardised over the graph's nodes.

    Module type (one-hot), bytes held, allocated, kept, read and written
    (log scale and as shares of the budget), calls, own DRAM time, position
    in execution order, buffer lifetimes, peak live activation bytes, and the
    cost model's slow-tier extra of each head (`item_costs`, (nodes, 2)
    seconds) alone and per byte: the prior a measured search refines.
    """
    n = len(graph.nodes)
    lifetime = np.zeros(n)
    for b in graph.buffers:
        lifetime[b.node] = max(lifetime[b.node], (b.free - b.alloc) / max(graph.events, 1))
    peak_live = budget.live.max(axis=0)
    held = np.stack([budget.weights, peak_live], axis=1)  # bytes each head keeps in its tier at its peak
    sizes = np.array([[x.weight_bytes, x.alloc_bytes, x.activation_bytes, x.transient_peak_bytes,
                       x.input_bytes, x.output_bytes, x.weight_read.bytes] for x in graph.nodes], dtype=float)
    micros = item_costs * 1e6
    numeric = np.column_stack([
        np.log1p(sizes), sizes / budget.limit, held / budget.limit,
        np.log1p([x.calls for x in graph.nodes]),
        [x.dram_time / max(graph.base_time, 1e-12) for x in graph.nodes],
        np.arange(n) / max(n - 1, 1), lifetime,
        micros, np.log1p(micros), micros / np.maximum(held, 1.0),
        [x.leaf for x in graph.nodes],
    ])
    spread = numeric.std(axis=0)
    numeric = (numeric - numeric.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    return torch.tensor(np.column_stack([_type_one_hot(graph), numeric]), dtype=torch.float32)


def _type_one_hot(graph: TierGraph) -> np.ndarray:
    types = [x.type for x in graph.nodes]
    common = sorted(set(types), key=lambda t: (-types.count(t), t))[:MAX_TYPES]
    one_hot = np.zeros((len(types), MAX_TYPES + 1))
    for i, t in enumerate(types):
        one_hot[i, common.index(t) if t in common else MAX_TYPES] = 1.0
    return one_hot


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class GraphEncoder(nn.Module):
    """Node embeddings: an MLP of the features, then `layers` residual message-passing layers."""

    def __init__(self, features: int, hidden: int = 32, layers: int = 3):
        super().__init__()
        self.embed = mlp(features, hidden, hidden)
        self.layers = nn.ModuleList(mlp(5 * hidden, hidden, hidden) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))

    def forward(self, x: torch.Tensor, neighbours: Neighbours) -> torch.Tensor:
        h = self.embed(x)
        for layer, norm in zip(self.layers, self.norms):
            context = h.mean(dim=-2, keepdim=True).expand_as(h)
            h = norm(h + layer(torch.cat([h, *neighbours.mean(h), context], dim=-1)))
        return h


class Actor(nn.Module):
    """The GNN policy: logits (nodes, 2 heads, 2 tiers) of each item's tier."""

    def __init__(self, features: int, hidden: int = 32, layers: int = 3):
        super().__init__()
        self.encoder = GraphEncoder(features, hidden, layers)
        self.head = mlp(hidden, hidden, 4)

    def forward(self, x: torch.Tensor, neighbours: Neighbours) -> torch.Tensor:
        return self.head(self.encoder(x, neighbours)).view(-1, 2, 2)
