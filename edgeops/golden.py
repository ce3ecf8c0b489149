"""The golden-sample layout: how a bundle's ``golden.npz`` stacks outputs and feeds inputs.

The converters write golden files, the agent replays them after install and the hardware tests
replay them on a device; all three must agree on one layout, so it is stated once here (pure
numpy). ``input/<name>`` holds the samples (first axis = samples, each fed as a batch of one, the
samples axis standing in for the input's batch axis), and ``output/<name>`` the artifact's
outputs on them, stacked with :func:`stack_outputs`: when each sample's output has a leading
batch axis of 1 the outputs are concatenated on it (so ``output[i]`` is sample i's output without
its batch axis), otherwise they are stacked on a new first axis (``output[i]`` is sample i's
whole output). :func:`sample_output` applies that rule to one run's output so a device can
compare like with like.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edgeops.bundle.manifest import TensorSpec

__all__ = ["golden_feeds", "sample_output", "stack_outputs"]


def stack_outputs(per_sample: Sequence[np.ndarray]) -> np.ndarray:
    """Stack one output over samples (see the module docstring for the rule)."""
    if all(a.ndim >= 1 and a.shape[0] == 1 for a in per_sample):
        return np.concatenate(per_sample, axis=0)
    return np.stack(per_sample, axis=0)


def sample_output(run_output: np.ndarray, golden: np.ndarray, index: int) -> np.ndarray:
    """What of one run's output matches ``golden[index]`` under :func:`stack_outputs`."""
    if run_output.ndim >= 1 and run_output.shape[0] == 1 \
            and golden[index].shape == run_output.shape[1:]:
        out: np.ndarray = run_output[0]
        return out
    return run_output


def golden_feeds(inputs: Mapping[str, np.ndarray], signature: Sequence[TensorSpec] = ()
                 ) -> list[dict[str, np.ndarray]]:
    """One feed per golden sample, each input given its batch of one where the manifest says.

    Golden inputs are stored samples first, with the samples axis in place of the input's
    batch axis (``TensorSpec.batch_axis``, 0 for manifests that do not say); a stored sample
    that already has the input's full rank (no batch axis, or an artifact that stores whole
    inputs) is fed as it is.
    """
    specs = {t.name: t for t in signature}
    count = next(iter(inputs.values())).shape[0]
    feeds: list[dict[str, np.ndarray]] = []
    for i in range(count):
        feed: dict[str, np.ndarray] = {}
        for k, v in inputs.items():
            spec = specs.get(k)
            x = np.asarray(v[i])
            axis = spec.batch_axis if spec is not None else 0
            full = spec is not None and x.ndim == len(spec.shape)
            feed[k] = x if axis is None or full else np.expand_dims(x, min(axis, x.ndim))
        feeds.append(feed)
    return feeds
