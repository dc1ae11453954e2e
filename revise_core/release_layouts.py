"""File names inside the released model folders, as their own code reads them. Light on purpose (no
imports): the loaders, the converter and ComfyUI's model-folder scan (nodes/comfy_bridge.py) share them.
"""

# The ReViSE release folder (`revise_ckpt/`, docs/models.md), relative to it.
WAN_FOLDER = "wan/wanxiang1_3b"  # the Wan2.1-T2V-1.3B folder as Wan-AI ships it
WAN_DIT_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
WAN_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
WAN_T5_TOKENIZER = "google/umt5-xxl"
WAN_VAE_FILE = "Wan2.1_VAE.pth"
VILA_FOLDER = "ar_model/checkpoint"
TRANSFORMER_FILE = "transformer/model.pt"  # wan_model.*, adapter.*, ar_vision_head.*, visual_context_adapter.*
ADAPTER_FILE = "adapter/model.pt"
VISION_HEAD_FILE = "vision_head/vision_head/pytorch_model.bin"
SPECIAL_TOKENS_FILE = "special_tokens/tokens.pkl"
UNCONDITIONED_FILE = "unconditioned_context/context.pkl"
RELEASE_MARKERS = (WAN_FOLDER, TRANSFORMER_FILE, VILA_FOLDER)  # a folder holding all three is a ReViSE release

# The Omni-Video 2 1.3B release (omnivideo/x2x_gen_unified_1_3B.py reads its checkpoint_dir): the DiT and the
# connector in one file, the boundary tokens, and Wan's umT5 / tokenizer / VAE beside them; its VLM
# (Qwen3-VL-30B-A3B-Instruct) is a separate download, found as the one Qwen3-VL folder inside or named.
OMNIVIDEO2_FILE, OMNIVIDEO2_TOKENS = "transformer/pytorch_model.pt", "special_tokens.pkl"
OMNIVIDEO2_MARKERS = (OMNIVIDEO2_FILE, OMNIVIDEO2_TOKENS)
