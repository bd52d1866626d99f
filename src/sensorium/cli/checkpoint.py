"""`sensorium checkpoint info DIR` and `sensorium checkpoint export SRC OUT [--to FAMILY]`: inspect a
local checkpoint directory, and write it back out in a library's layout (open_clip <-> HF CLIP included)."""

from __future__ import annotations

import argparse
import json


def register(commands) -> None:
    """Add the `checkpoint` command group."""
    p = commands.add("info", cmd_info, "what a checkpoint or model directory holds (family, size, modalities, preprocessing)",
                     group="checkpoint")
    p.add_argument("path", help="checkpoint directory (HF transformers or open_clip layout) or a Sensorium run / model directory")
    p.add_argument("--allow-pickle", action="store_true", help="read .bin files with torch.load(weights_only=True)")
    p = commands.add("export", cmd_export, "load a checkpoint into Sensorium and write it in a library's layout",
                     group="checkpoint")
    p.add_argument("path", help="source checkpoint directory")
    p.add_argument("out", help="directory to write")
    p.add_argument("--to", default=None, help="target family: clip, siglip, open_clip, llama, whisper "
                                              "(default: the source's own)")
    p.add_argument("--allow-pickle", action="store_true", help="read .bin files with torch.load(weights_only=True)")


def cmd_info(args: argparse.Namespace) -> int:
    """Print the checkpoint summary as JSON: a library's layout (HF, open_clip), or any model `sensorium.load`
    reads (a quick start run, a decoder run, a packaged name)."""
    import sensorium
    from sensorium.core.files import CheckpointError
    from sensorium.interop.pretrained import detect_family, load_pretrained

    try:
        detect_family(args.path)
    except CheckpointError:
        model = sensorium.load(args.path)  # Sensorium's own layouts; an error lists every layout looked for
        print(json.dumps({"layout": "sensorium", **model.describe()}, indent=2, default=str))
        return 0
    print(json.dumps(load_pretrained(args.path, allow_pickle=args.allow_pickle).info(), indent=2, default=str))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Load `path`, write `out` in the target layout, and say what was written."""
    from sensorium.interop.pretrained import export_pretrained, load_pretrained

    pretrained = load_pretrained(args.path, allow_pickle=args.allow_pickle)
    out = export_pretrained(pretrained, args.out, family=args.to)
    print(f"wrote {args.to or pretrained.family} checkpoint to {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0
