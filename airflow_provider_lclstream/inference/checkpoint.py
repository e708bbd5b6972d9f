"""Build PeakNet from a config and load weights from a checkpoint file (no hub download).

A checkpoint is a ``.safetensors`` file or a torch file (``torch.load`` with
``weights_only=True``); a torch file may wrap the state dict as ``model_state_dict``,
``state_dict`` or ``model`` (training checkpoints do). Prefixes added by DDP (``module.``) and
``torch.compile`` (``_orig_mod.``) are removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from airflow_provider_lclstream.inference.errors import CheckpointError
from airflow_provider_lclstream.inference.model import PeakNet

if TYPE_CHECKING:
    from airflow_provider_lclstream.inference.config import PeakNetModelConfig

WRAPPERS = ("model_state_dict", "state_dict", "model")
PREFIXES = ("module.", "_orig_mod.")
SHOWN = 5


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file}: no such file")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors, pickle and zip errors alike
        raise CheckpointError(f"checkpoint {file}: cannot be read: {err}") from err
    if isinstance(state, dict):
        for key in WRAPPERS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {file}: holds no state dict of tensors")
    return {_strip(name): tensor for name, tensor in state.items()}


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def load_model(config: PeakNetModelConfig, checkpoint: str | Path | None) -> PeakNet:
    """PeakNet in eval mode; weights from ``checkpoint`` (None: random init, for tests only)."""
    model = PeakNet(config)
    if checkpoint is not None:
        state = read_state_dict(checkpoint)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        _compare(Path(checkpoint), expected, {k: tuple(v.shape) for k, v in state.items()})
        model.load_state_dict(state, strict=True)
    return model.eval()


def save_checkpoint(model: torch.nn.Module, path: str | Path) -> Path:
    """Write ``model``'s weights: safetensors for ``.safetensors``, else a torch file."""
    file = Path(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if file.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(file))
    else:
        torch.save(state, file)
    return file


def random_checkpoint(config: PeakNetModelConfig, path: str | Path, seed: int = 0) -> Path:
    """A checkpoint with seeded random weights (tests, demos and benchmarks; finds no peaks
    that mean anything)."""
    torch.manual_seed(seed)
    return save_checkpoint(PeakNet(config), path)


def check_checkpoint(config: PeakNetModelConfig, path: str | Path) -> None:
    """Fail early, in the driver, when the checkpoint is missing or does not fit ``config``.

    The model is built on torch's ``meta`` device (no memory) and the file's tensor names and
    shapes are read lazily (safetensors header; torch files memory-mapped).
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file}: no such file (--checkpoint)")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in PeakNet(config).state_dict().items()}
    if file.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                found = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
        except Exception as err:
            raise CheckpointError(f"checkpoint {file}: cannot be read: {err}") from err
    else:
        found = {k: tuple(v.shape) for k, v in read_state_dict(file).items()}
    _compare(file, expected, found)


def _compare(
    file: Path, expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]
) -> None:
    found = {_strip(k): v for k, v in found.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        f"{k} {found[k]} vs {v}" for k, v in expected.items() if k in found and found[k] != v
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_listing(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape, file vs config ({_listing(shapes)})")
        raise CheckpointError(
            f"checkpoint {file} does not match the model config: "
            + "; ".join(parts)
            + ". Use the model config the checkpoint was trained with (--model-config)."
        )


def _strip(name: str) -> str:
    for prefix in PREFIXES:
        while name.startswith(prefix):
            name = name[len(prefix) :]
    return name
