"""Convert PyTorch pickle checkpoints to one safetensors file.

Run as a script in its own process, never imported by the daemon:
``python pickle_to_safetensors.py SOURCE... DEST``. It needs only torch and
safetensors. ``torch.load(weights_only=True)`` unpickles with torch's
restricted unpickler, which refuses anything but tensors and plain containers.
Exit status: 0 done; 3 torch or safetensors missing; 4 a file refused by the
restricted unpickler or not a state dict; 1 anything else. The reason is the
last line on stderr.
"""

import sys


def fail(status: int, why: str) -> None:
    print(why, file=sys.stderr)
    sys.exit(status)


def main() -> None:
    *sources, dest = sys.argv[1:]
    try:
        import torch
        from safetensors.torch import save_file
    except ImportError as exc:
        fail(3, f"{exc.name} is not installed in {sys.executable}")
    tensors = {}
    for source in sources:
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError/RuntimeError for refused content
            fail(4, f"{source}: torch.load(weights_only=True) refused it: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]  # a training checkpoint around the weights
        if not isinstance(state, dict) or not state:
            fail(4, f"{source}: not a state dict of tensors")
        for name, value in state.items():
            if not isinstance(name, str) or not isinstance(value, torch.Tensor):
                fail(4, f"{source}: entry {name!r} is not a named tensor")
            if name in tensors:
                fail(4, f"{source}: tensor {name!r} is also in an earlier file")
            tensors[name] = value.detach().contiguous().clone()  # shared storage (tied weights) is split
    save_file(tensors, dest, metadata={"format": "pt"})


if __name__ == "__main__":
    main()
