#include "planner/search.h"

#include <algorithm>
#include <limits>
#include <tuple>
#include <utility>

#include "planner/preorder.h"

namespace torch_tier::planner {
namespace {

// The lowest offset of a placed buffer: above everything, so scans for the
// lowest unplaced offset need no separate placed check.
constexpr Offset kPlaced = std::numeric_limits<Offset>::max();

// An unplaced buffer and the lowest offset it can take now; `rank` is its
// position in the current partition's pre-order.
struct Candidate {
  Offset offset;
  int rank;
  bool operator<(const Candidate& o) const {
    return std::tie(offset, rank) < std::tie(o.offset, o.rank);
  }
};

// An undo record: values[index] was `old` before a change.
struct Change {
  int index;
  Offset old;
};

// The state of one search: a partial placement plus, incrementally updated
// and undone on backtrack, each unplaced buffer's lowest feasible offset and
// each section's floor and sum of unplaced sizes.
//
// The search builds canonical solutions only: buffers placed in non-decreasing
// offset order (ties in pre-order), each at the lowest offset the buffers
// already placed leave it. Every placement can be rearranged into one of
// these without raising its peak, so nothing is lost by skipping the rest.
class Dfs {
 public:
  Dfs(const std::vector<Buffer>& buffers, const Sweep& sweep, const SearchLimits& limits,
      SearchCounters& counters)
      : buffers_(buffers),
        sweep_(sweep),
        limits_(limits),
        counters_(counters),
        solution_(buffers.size(), 0),
        min_offset_(buffers.size(), 0),
        floor_(sweep.sections.size(), 0),
        unplaced_total_(sweep.sections.size(), 0),
        cuts_(sweep.cuts()),
        section_seen_(sweep.sections.size(), 0) {
    for (size_t s = 0; s < sweep.sections.size(); ++s) {
      for (const int b : sweep.sections[s]) unplaced_total_[s] += buffers[b].size;
    }
  }

  Outcome run() {
    for (const Partition& partition : sweep_.partitions) {
      const Outcome outcome = solve(partition);
      if (outcome != Outcome::kFound) return outcome;
    }
    return Outcome::kFound;
  }

  std::vector<Offset> take_solution() { return std::move(solution_); }

 private:
  // Searches one partition from scratch, in a pre-order computed now (the
  // 'T' key depends on what is still unplaced).
  Outcome solve(const Partition& partition) {
    const std::vector<int> ranked =
        preorder(partition.buffers, buffers_, sweep_, unplaced_total_, limits_.preorder_keys);
    std::vector<Candidate> all(ranked.size());
    for (int r = 0; r < static_cast<int>(ranked.size()); ++r) all[r] = {0, r};
    return dfs(partition, ranked, all, 0, 0);
  }

  // One search node: tries each unplaced buffer of `partition` next, at its
  // lowest offset, keeping the placement canonical (after the last buffer
  // placed, at `last_offset` with rank `last_rank`).
  Outcome dfs(const Partition& partition, const std::vector<int>& ranked,
              const std::vector<Candidate>& previous, Offset last_offset, int last_rank) {
    if (++nodes_ > limits_.node_limit) return Outcome::kNodeLimit;
    ++counters_.nodes;
    if (Clock::now() > limits_.deadline) return Outcome::kTimeout;
    const std::vector<Candidate> open = unplaced(ranked, previous);
    if (open.empty()) return Outcome::kFound;
    for (const Candidate& c : next_choices(ranked, open, last_offset, last_rank)) {
      bool meets_unplaced = false;
      const Outcome outcome = place(partition, ranked, open, c, meets_unplaced);
      if (outcome != Outcome::kInfeasible) return outcome;
      // A buffer that meets no unplaced buffer sits at this offset in every
      // completion; if no completion works with it placed first, none works.
      if (!meets_unplaced) break;
    }
    ++counters_.backtracks;
    return Outcome::kInfeasible;
  }

  // The unplaced buffers among `previous`, at their current lowest offsets.
  std::vector<Candidate> unplaced(const std::vector<int>& ranked,
                                  const std::vector<Candidate>& previous) const {
    std::vector<Candidate> result;
    result.reserve(previous.size());
    for (const Candidate& c : previous) {
      const int b = ranked[c.rank];
      if (!placed(b)) result.push_back({min_offset_[b], c.rank});
    }
    return result;
  }

  // The buffers worth placing next, in the order to try them (by offset,
  // then rank). Canonical order: none below the last one placed. Dominance:
  // none at or above the lowest top of any unplaced buffer, since that
  // leaves a gap the buffer would fit in; the placement with it moved down
  // into the gap is reached on another branch.
  std::vector<Candidate> next_choices(const std::vector<int>& ranked,
                                      const std::vector<Candidate>& open, Offset last_offset,
                                      int last_rank) const {
    Offset lowest_top = std::numeric_limits<Offset>::max();
    for (const Candidate& c : open) {
      lowest_top = std::min(lowest_top, c.offset + buffers_[ranked[c.rank]].size);
    }
    std::vector<Candidate> choices;
    for (const Candidate& c : open) {
      const bool canonical =
          c.offset > last_offset || (c.offset == last_offset && c.rank >= last_rank);
      if (canonical && c.offset < lowest_top) choices.push_back(c);
    }
    std::sort(choices.begin(), choices.end());
    return choices;
  }

  // Places candidate `c`, checks the sections, searches on, and undoes it.
  Outcome place(const Partition& partition, const std::vector<int>& ranked,
                const std::vector<Candidate>& open, const Candidate& c,
                bool& meets_unplaced) {
    const int b = ranked[c.rank];
    const Offset top = c.offset + buffers_[b].size;
    const size_t offset_mark = offset_trail_.size();
    const size_t floor_mark = floor_trail_.size();
    min_offset_[b] = kPlaced;
    meets_unplaced = raise_min_offsets(b, top);
    raise_floors(b, top);
    Outcome outcome = Outcome::kInfeasible;
    if (sections_fit(partition, c.offset)) {
      outcome = decompose(partition, ranked, open, c, b);
    }
    undo(floor_trail_, floor_, floor_mark);
    for (int s = sweep_.first_section[b]; s < sweep_.last_section[b]; ++s) {
      unplaced_total_[s] += buffers_[b].size;
    }
    undo(offset_trail_, min_offset_, offset_mark);
    min_offset_[b] = c.offset;
    return outcome;
  }

  // Lifts the lowest offset of each unplaced buffer meeting `b` above `top`
  // and collects in `affected_` the sections whose floor this may raise. Returns
  // whether `b` meets any unplaced buffer at all.
  bool raise_min_offsets(int b, Offset top) {
    bool meets_unplaced = false;
    affected_.clear();
    ++epoch_;
    for (const int other : sweep_.overlaps[b]) {
      if (placed(other)) continue;
      meets_unplaced = true;
      if (min_offset_[other] >= top) continue;
      offset_trail_.push_back({other, min_offset_[other]});
      min_offset_[other] = align_up(top, buffers_[other].alignment);
      for (int s = sweep_.first_section[other]; s < sweep_.last_section[other]; ++s) {
        // A floor already at or above this buffer's offset cannot rise.
        if (section_seen_[s] == epoch_ || floor_[s] >= min_offset_[other]) continue;
        section_seen_[s] = epoch_;
        affected_.push_back(s);
      }
    }
    return meets_unplaced;
  }

  // Cross-section bookkeeping after placing `b` with its top at `top`: in
  // b's sections the rest must go above it and is b.size smaller; in the
  // affected sections nothing can go below the lowest unplaced offset.
  void raise_floors(int b, Offset top) {
    for (int s = sweep_.first_section[b]; s < sweep_.last_section[b]; ++s) {
      set_floor(s, top);
      unplaced_total_[s] -= buffers_[b].size;
    }
    for (const int s : affected_) set_floor(s, lowest_unplaced_offset(s));
  }

  // The lowest offset any unplaced buffer of section `s` can take, or the
  // current floor when that is not higher (the scan stops early then).
  Offset lowest_unplaced_offset(int s) const {
    Offset lowest = kPlaced;
    for (const int other : sweep_.sections[s]) {
      if (min_offset_[other] <= floor_[s]) return floor_[s];
      lowest = std::min(lowest, min_offset_[other]);
    }
    return lowest == kPlaced ? floor_[s] : lowest;
  }

  void set_floor(int s, Offset floor) {
    if (floor <= floor_[s]) return;
    floor_trail_.push_back({s, floor_[s]});
    floor_[s] = floor;
  }

  // Cross-section inference: the unplaced buffers of a section are live
  // together, so they stack; they go above its floor and above the offset
  // just placed (canonical order), and must fit below the capacity.
  bool sections_fit(const Partition& partition, Offset offset) const {
    for (int s = partition.first_section; s < partition.last_section; ++s) {
      if (std::max(offset, floor_[s]) + unplaced_total_[s] > limits_.capacity) return false;
    }
    return true;
  }

  // Records `b`'s offset and searches on. Where placing `b` leaves no
  // unplaced buffer spanning two adjacent sections, the partition falls
  // apart into pieces that no longer interact: each is solved on its own.
  Outcome decompose(const Partition& partition, const std::vector<int>& ranked,
                    const std::vector<Candidate>& open, const Candidate& c, int b) {
    solution_[b] = c.offset;
    std::vector<int> bounds;
    for (int s = sweep_.first_section[b]; s + 1 < sweep_.last_section[b]; ++s) {
      if (--cuts_[s] == 0) bounds.push_back(s + 1);
    }
    const Outcome outcome = bounds.empty()
                                ? dfs(partition, ranked, open, c.offset, c.rank)
                                : solve_pieces(partition, bounds);
    for (int s = sweep_.first_section[b]; s + 1 < sweep_.last_section[b]; ++s) ++cuts_[s];
    return outcome;
  }

  // Solves the pieces of `partition` split at the sections in `bounds`.
  Outcome solve_pieces(const Partition& partition, std::vector<int> bounds) {
    bounds.insert(bounds.begin(), partition.first_section);
    bounds.push_back(partition.last_section);
    for (size_t i = 0; i + 1 < bounds.size(); ++i) {
      Partition piece{{}, bounds[i], bounds[i + 1]};
      for (const int b : partition.buffers) {
        if (!placed(b) && sweep_.first_section[b] < piece.last_section &&
            piece.first_section < sweep_.last_section[b]) {
          piece.buffers.push_back(b);
        }
      }
      if (piece.buffers.empty()) continue;
      const Outcome outcome = solve(piece);
      if (outcome != Outcome::kFound) return outcome;
    }
    return Outcome::kFound;
  }

  bool placed(int b) const { return min_offset_[b] == kPlaced; }

  static void undo(std::vector<Change>& trail, std::vector<Offset>& values, size_t mark) {
    while (trail.size() > mark) {
      values[trail.back().index] = trail.back().old;
      trail.pop_back();
    }
  }

  const std::vector<Buffer>& buffers_;
  const Sweep& sweep_;
  const SearchLimits& limits_;
  SearchCounters& counters_;
  int64_t nodes_ = 0;

  std::vector<Offset> solution_;    // offsets of the placement found
  std::vector<Offset> min_offset_;  // lowest feasible offset, kPlaced once placed
  std::vector<Offset> floor_;
  std::vector<Offset> unplaced_total_;
  std::vector<int> cuts_;
  std::vector<Change> offset_trail_;
  std::vector<Change> floor_trail_;

  // Scratch for raise_min_offsets: sections to re-floor, deduplicated by epoch.
  std::vector<int> affected_;
  std::vector<int64_t> section_seen_;
  int64_t epoch_ = 0;
};

}  // namespace

Outcome search(const std::vector<Buffer>& buffers, const Sweep& sweep, const SearchLimits& limits,
               std::vector<Offset>& offsets, SearchCounters& counters) {
  Dfs dfs(buffers, sweep, limits, counters);
  const Outcome outcome = dfs.run();
  if (outcome == Outcome::kFound) offsets = dfs.take_solution();
  return outcome;
}

}  // namespace torch_tier::planner
