"""What a training run is given besides its spec: the data as tensors, and how to run."""

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gradlab.core.data import feature_columns, n_outputs


@dataclass(frozen=True)
class TaskData:
    """Normalized train and validation tensors of one (dataset, input_norm), on the CPU."""

    task: str  # "regression" or "classification"
    n_outputs: int
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, task: str) -> "TaskData":
        """Split a model-input table (features ``x_*``, target ``y``, ``split``) into tensors."""
        columns = feature_columns(frame)
        parts = {}
        for name in ("train", "val"):
            rows = frame[frame["split"] == name]
            x = torch.tensor(rows[columns].to_numpy(np.float32))
            if task == "regression":
                y = torch.tensor(rows["y"].to_numpy(np.float32))
            else:
                y = torch.tensor(rows["y"].to_numpy(np.int64))
            parts[name] = (x, y)
        return cls(task, n_outputs(frame, task), *parts["train"], *parts["val"])

    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of the exact tensors a run trains and validates on.

        Part of a stored result's identity: the same spec on other data is another result.
        """
        digest = hashlib.sha256(f"{self.task}:{self.n_outputs}".encode())
        for tensor in (self.x_train, self.y_train, self.x_val, self.y_val):
            digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what: that is the spec)."""

    device: str = "cpu"
    divergence_factor: float = 1e4  # loss above this multiple of the first loss: diverged
    probe_batch_size: int = 256
    distribution_size: int = 64  # values kept per layer and quantity at each checkpoint
    probe: bool = True  # False: the bare loop, for overhead benchmarks; no statistics at all
    # the Jacobian's singular values (gradlab.core.spectrum) at this many of each run's probe
    # inputs at init (0: none), and at the distribution checkpoints too when asked
    spectrum_points: int = 4
    spectrum_checkpoints: bool = False

    def identity(self) -> dict[str, Any]:
        """The options that change a run's numbers (the device by kind: cpu, cuda, mps)."""
        return {
            "device": resolve_device(self.device).type,
            "divergence_factor": self.divergence_factor,
            "probe_batch_size": self.probe_batch_size,
            "distribution_size": self.distribution_size,
            "probe": self.probe,
            "spectrum_points": self.spectrum_points,
            "spectrum_checkpoints": self.spectrum_checkpoints,
        }


def available_devices() -> list[str]:
    """The ``device`` values this machine can run: auto, cpu, each CUDA device, MPS if present."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(device: str) -> torch.device:
    """``auto`` picks cuda, else mps, else cpu; anything else is taken as given."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
