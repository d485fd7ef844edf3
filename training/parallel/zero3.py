"""ZeRO stage 3: each rank keeps 1/N of the parameters and gathers a layer's just before it
runs, forward and backward, freeing it after (Rajbhandari et al., ZeRO, section 5.3).

A *unit* is what is gathered at once: the embedding, each block, the output head (its norm and
an untied output layer). Its parameters fill buckets of their own in GradBuckets, so gathering
a unit is one all-gather per bucket over the DP x CP group (an MoE block's expert buckets: over
their expert-DP group, the replicas of that expert shard) and its gradients are
reduce-scattered by the same buckets as soon as they are complete. Module hooks drive it:

- before a module's forward its units are gathered (waiting only for what is still in flight),
  and the next module's are prefetched: their all-gathers run while this one computes;
- after the forward they are freed (not the last module's: its backward comes next), and a
  hook on the output waits for its gradient;
- when that gradient arrives (the module's backward is next) the units are gathered again and
  the previous module's are prefetched;
- when every parameter of a unit has had its gradient accumulated, the unit is freed.

Freeing keeps each parameter's shape but gives its storage back, so what autograd saved for the
backward refers to the same storage and sees the data again once re-gathered (FSDP's trick).
With the tied word embedding (pp = 1) the output head needs the embedding's unit too: it is
gathered for the head's forward and kept until the embedding's backward (where its gradient
is complete). Full recomputation reruns a block's forward inside its backward: the
unit is then already gathered and stays so.

A pipeline would gather every unit twice per micro-batch, interleaved with other micro-batches'
work; the config rejects zero 3 with pp > 1 (config.py).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from training.parallel import comm
from training.parallel.grad_buckets import GradBuckets


@dataclass(eq=False)
class Unit:
    name: str
    params: list[nn.Parameter]
    buckets: list[int] = field(default_factory=list)
    pending: list = field(default_factory=list)  # all-gathers in flight
    gathered: bool = False
    in_backward: bool = False
    waiting_grads: int = 0  # parameters whose gradient this backward has not accumulated


def layer_units(model) -> tuple[list[Unit], list[tuple[nn.Module, list[Unit]]]]:
    """The units of a GPT (one chunk: pp = 1) in forward order, and each module that runs with
    the units it needs."""
    units, runs = [], []
    embedding = None
    if model.embedding is not None:
        embedding = Unit("embedding", list(model.embedding.parameters()))
        units.append(embedding)
        runs.append((model.embedding, [embedding]))
    for name, block in model.blocks.items():
        unit = Unit(f"blocks.{name}", list(block.parameters()))
        units.append(unit)
        runs.append((block, [unit]))
    if model.head is not None:
        word = model.output_layer().weight
        tied = embedding is not None and any(word is p for p in embedding.params)
        own = list(model.head.parameters()) + ([] if tied else [word])
        head = Unit("head", own)
        units.append(head)
        runs.append((model.head, [head, embedding] if tied else [head]))
    return units, runs


class ParameterGatherer:
    """Gathers and frees stage-3 units around the model's modules (see the module docstring).
    `peak_gathered` records the most parameter elements gathered at once (tests, bench)."""

    def __init__(self, buckets: GradBuckets, units: list[Unit],
                 runs: list[tuple[nn.Module, list[Unit]]]):
        self.buckets, self.units, self.runs = buckets, units, runs
        for unit in units:
            unit.buckets = buckets.buckets_of(unit.params)
        self._unit_of = {param: unit for unit in units for param in unit.params}
        self.peak_gathered = 0
        for position, (module, _) in enumerate(runs):
            module.register_forward_pre_hook(
                lambda _m, _args, position=position: self._before_forward(position))
            module.register_forward_hook(
                lambda _m, _args, out, position=position: self._after_forward(position, out))
        for param in self._unit_of:
            param.register_post_accumulate_grad_hook(self._on_grad_accumulated)

    def _start_gather(self, unit: Unit) -> None:
        if unit.gathered or unit.pending:
            return
        unit.pending = [self.buckets.gather_params_async(i) for i in unit.buckets]
        self._note_peak()

    def _gather(self, unit: Unit) -> None:
        self._start_gather(unit)
        for pending in unit.pending:
            comm.wait(pending)
        unit.pending, unit.gathered = [], True

    def _free(self, unit: Unit) -> None:
        for pending in unit.pending:  # a prefetch nobody used: finish it before freeing
            comm.wait(pending)
        for index in unit.buckets:
            self.buckets.free_params(index)
        unit.pending, unit.gathered, unit.in_backward = [], False, False

    def gathered_numel(self) -> int:
        """Parameter elements (padding included) of the buckets holding memory now."""
        return sum(full.numel() for full in self.buckets.full_params
                   if full.untyped_storage().nbytes())

    def _note_peak(self) -> None:
        self.peak_gathered = max(self.peak_gathered, self.gathered_numel())

    def _prefetch(self, position: int) -> None:
        if 0 <= position < len(self.runs):
            for unit in self.runs[position][1]:
                self._start_gather(unit)

    def _before_forward(self, position: int) -> None:
        units = self.runs[position][1]
        recomputing = any(unit.in_backward for unit in units)
        for unit in units:
            self._gather(unit)
        if not recomputing:
            self._prefetch(position + 1)

    def _after_forward(self, position: int, out) -> None:
        units = self.runs[position][1]
        if any(unit.in_backward for unit in units):
            return  # a recomputation inside the backward: the backward still needs them
        training = isinstance(out, torch.Tensor) and out.requires_grad
        if training:
            out.register_hook(lambda grad: self._before_backward(position))
        if not (training and position == len(self.runs) - 1):
            for unit in units:
                self._free(unit)
        # else: the last module's backward comes next; keep it rather than gather it again

    def _before_backward(self, position: int) -> None:
        for unit in self.runs[position][1]:
            if not unit.in_backward:
                self._gather(unit)
                unit.in_backward = True
                unit.waiting_grads = sum(p.requires_grad for p in unit.params)
        self._prefetch(position - 1)

    def _on_grad_accumulated(self, param: nn.Parameter) -> None:
        unit = self._unit_of[param]
        if not unit.in_backward:
            return
        unit.waiting_grads -= 1
        if unit.waiting_grads == 0:
            self._free(unit)

    def release(self) -> None:
        """After the step's last backward: free whatever is still gathered (units whose
        parameters got no gradient), so the optimizer's update is what the next gather sees."""
        for unit in self.units:
            if unit.gathered or unit.pending:
                self._free(unit)

    @contextmanager
    def all_gathered(self):
        """Every unit gathered (e.g. to read the whole model's parameters), freed after."""
        for unit in self.units:
            self._gather(unit)
        try:
            yield
        finally:
            self.release()


def parameters_gathered(trainer):
    """A context in which every parameter of the trainer's model holds its data (stage 3:
    gathered, freed after; other stages: always)."""
    gatherer = getattr(trainer, "gatherer", None)
    return gatherer.all_gathered() if gatherer is not None else nullcontext()
