"""ComfyUI nodes: thin wrappers over `revise_core` (filled in by the ComfyUI-nodes issue)."""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
