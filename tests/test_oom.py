"""The OOM classifier on real message texts, raised as they are raised, wrapped as users wrap them.

Each message is copied from the public issue named beside it (the numbers vary per report; the
wording is PyTorch's or the library's). No GPU is needed: exceptions are constructed directly.
"""

from __future__ import annotations

import pytest
import torch
from torch._utils import ExceptionWrapper

from hpsearch.batch_size.oom import is_oom, is_oom_message, oom_summary

OOM_TEXTS = [
    # Caching allocator, PyTorch >= 2.1 wording (pytorch/pytorch#16417, comment of 2024-03-13).
    "CUDA out of memory. Tried to allocate 22.00 MiB. GPU 0 has a total capacity of 23.65 GiB of "
    "which 11.06 MiB is free. Including non-PyTorch memory, this process has 23.60 GiB memory in "
    "use. Of the allocated memory 22.90 GiB is allocated by PyTorch, and 194.87 MiB is reserved "
    "by PyTorch but unallocated.",
    # Caching allocator, PyTorch 1.x wording (pytorch/pytorch#59778).
    "CUDA out of memory. Tried to allocate 2.26 GiB (GPU 0; 6.00 GiB total capacity; 781.59 MiB "
    "already allocated; 3.03 GiB free; 1.24 GiB reserved in total by PyTorch)",
    # Raw cudaMalloc inside a kernel (taohan10200/IIM#28).
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other "
    "API call,so the stacktrace below might be incorrect.",
    # cuBLAS handle creation under memory pressure (layumi/Person_reID_baseline_pytorch#286).
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    # cuDNN workspace (KupynOrest/DeblurGAN#128).
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    # ROCm (kyuz0/amd-strix-halo-image-video-toolboxes#3).
    "HIP out of memory. Tried to allocate 3.31 GiB. GPU 0 has a total capacity of 128.00 GiB of "
    "which 780.24 MiB is free.",
    # Intel GPUs (intel/torch-xpu-ops#3011).
    "XPU out of memory. Tried to allocate 4.66 GiB. GPU 0 has a total capacity of 5.65 GiB of "
    "which 5.65 GiB is free.",
    # Apple GPUs (pytorch/pytorch#130112).
    "MPS backend out of memory (MPS allocated: 5.50 GB, other allocations: 14.76 GB, max allowed: "
    "20.40 GB). Tried to allocate 147.24 MB on private pool. Use "
    "PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit for memory allocations",
    # CPU allocator, Linux (JingyunLiang/VRT#49) and Windows (MaximeVandegar/...#10) wordings.
    "[enforce fail at alloc_cpu.cpp:73] . DefaultCPUAllocator: can't allocate memory: you tried "
    "to allocate 116813856768 bytes. Error code 12 (Cannot allocate memory)",
    "[enforce fail at C:\\b\\abs\\c10\\core\\impl\\alloc_cpu.cpp:81] data. DefaultCPUAllocator: "
    "not enough memory: you tried to allocate 1981808640 bytes.",
]

NOT_OOM_TEXTS = [
    # Lightning and accelerate call this an OOM (after pytorch/pytorch#4107); it is also a real
    # layout/size limitation (pytorch/pytorch#11065), so a smaller batch may not help.
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a "
    "non-contiguous input.",
    "cuDNN error: CUDNN_STATUS_EXECUTION_FAILED",  # mjq11302010044/TATT#18
    "CUDA error: an illegal memory access was encountered",
    "CUDA error: device-side assert triggered",
    "mat1 and mat2 shapes cannot be multiplied (64x512 and 2048x10)",
    "DataLoader worker (pid 19597) is killed by signal: Killed.",  # hezhangsprinter/DCPDN#12
]


@pytest.mark.parametrize("text", OOM_TEXTS)
def test_real_oom_messages_are_recognised(text: str) -> None:
    assert is_oom(RuntimeError(text))
    assert is_oom_message(f"Traceback ...\nRuntimeError: {text}\n")  # a child's stderr


@pytest.mark.parametrize("text", NOT_OOM_TEXTS)
def test_other_errors_are_not(text: str) -> None:
    assert not is_oom(RuntimeError(text))


def test_torch_exception_types() -> None:
    assert is_oom(torch.OutOfMemoryError("anything"))
    assert is_oom(torch.cuda.OutOfMemoryError("anything"))
    assert is_oom(MemoryError())
    # Since PyTorch 2.8, asynchronous CUDA errors arrive as AcceleratorError (Wan2GP#1083).
    assert is_oom(torch.AcceleratorError("CUDA error: out of memory"))
    assert not is_oom(ValueError("learning rate must be positive"))


def test_wrapped_ooms_are_found_through_cause_and_context() -> None:
    oom = torch.OutOfMemoryError(OOM_TEXTS[0])

    def wrap() -> None:
        try:
            raise oom
        except RuntimeError as e:
            raise ValueError("training failed") from e  # a user's wrapper

    def hide() -> None:
        try:
            raise oom
        except RuntimeError:
            raise KeyError("cleanup failed too") from None  # `from None` hides it on purpose

    def chain() -> None:
        try:
            raise oom
        except RuntimeError:
            raise RuntimeError("checkpoint save failed")  # noqa: B904  implicit context

    with pytest.raises(ValueError, match="training failed") as wrapped:
        wrap()
    assert is_oom(wrapped.value)
    assert oom_summary(wrapped.value).startswith("CUDA out of memory. Tried to allocate 22.00 MiB")
    with pytest.raises(KeyError) as hidden:
        hide()
    assert is_oom(hidden.value)  # __context__ is still set; only __suppress_context__ is
    with pytest.raises(RuntimeError) as chained:
        chain()
    assert is_oom(chained.value)


def test_a_dataloader_worker_reraise_is_an_oom() -> None:
    """DataLoader re-raises a worker's exception as a new one with the traceback as text."""
    try:
        raise RuntimeError(OOM_TEXTS[2])
    except RuntimeError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(RuntimeError) as info:
        wrapper.reraise()
    assert str(info.value).startswith("Caught RuntimeError in DataLoader worker process 0")
    assert is_oom(info.value)


def test_cycles_in_the_chain_terminate() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert not is_oom(a)
