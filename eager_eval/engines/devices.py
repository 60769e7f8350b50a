"""Devices and dtypes: `auto` resolved, a device that is not there refused by name.

`device=auto` is every front end's default: CUDA when torch sees a GPU, then Apple's MPS, then
the CPU. The device that actually runs is printed when a run starts and recorded with the
results (`engine.device`). Imports torch (inside the functions), loads nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing import Any

from eager_eval.common.errors import UserError
from eager_eval.common.settings import SettingError

if TYPE_CHECKING:  # pragma: no cover
    import torch

AUTO = "auto"

DTYPES = ("auto", "float32", "bfloat16", "float16")
"""Accepted `dtype` names; `auto` (or None) = float32 on CPU, bfloat16 on CUDA."""


class DeviceError(ValueError, UserError):
    """The requested device does not exist on this machine; the message suggests one that does."""


def dtype_name(dtype: Any) -> str:
    """Normalise `dtype` (None, a name, or a torch.dtype) to one of DTYPES, without torch;
    a SettingError for any other name."""
    if dtype is None:
        return AUTO
    text = str(dtype).strip().lower().removeprefix("torch.")  # accept torch.float32 itself
    if text not in DTYPES:
        raise SettingError("dtype", dtype, f"one of: {', '.join(DTYPES)} (or None)")
    return text


def resolve_device(device: str | None) -> str:
    """`auto` (or None) -> cuda, else mps, else cpu, by what torch sees; other names as given."""
    if device is not None and str(device).strip().lower() != AUTO:
        return str(device)
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def check_device(device: str) -> "torch.device":
    """`device` as a torch.device that exists on this machine, else DeviceError naming one that
    does (imports torch, loads nothing). `cuda` means the current CUDA device (`cuda:0`)."""
    import torch

    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"device {device!r} is not a valid device ({err}); use --device cpu") from None
    if torch_device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(
                f"device {device!r} requested but CUDA is not available on this machine "
                "(no GPU, or a CPU-only torch build); use --device cpu"
            )
        if torch_device.index is not None and torch_device.index >= count:
            raise DeviceError(
                f"device {device!r} requested but this machine has {count} CUDA device(s) "
                f"(cuda:0..cuda:{count - 1}); use --device cuda:0 or --device cpu"
            )
        if torch_device.index is None:  # what ran is recorded: name the device itself
            torch_device = torch.device("cuda", torch.cuda.current_device())
    elif torch_device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {device!r} requested but MPS is not available; use --device cpu")
    elif torch_device.type != "cpu":
        raise DeviceError(f"device {device!r} is not supported; use --device cpu or cuda[:N]")
    return torch_device


def torch_dtype(dtype_name: str, device: "torch.device") -> "torch.dtype":
    """The torch dtype of a DTYPES name on `device` (auto: bf16 on CUDA where supported)."""
    import torch

    if dtype_name == AUTO:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # bf16 matmuls are slow on CPUs without AMX
    return getattr(torch, dtype_name)


__all__ = ["DTYPES", "dtype_name", "DeviceError", "resolve_device", "check_device", "torch_dtype"]
