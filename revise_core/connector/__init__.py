"""Connector families (`base.ContextConnector`): Omni-Video 2 (`omnivideo2`) and the ReViSE release (`revise`).

`load_connector(path)` reads one file: this project's safetensors (either family, named in its metadata)
or an Omni-Video 2 checkpoint; `revise.load_release_connector(folder)` reads a ReViSE release folder.
"""

from .base import ContextConnector, VisualContextAdapter, WanRMSNorm
from .omnivideo2 import (
    BOUNDARY_NAMES,
    CONNECTOR_KEYS,
    CONNECTOR_LAYOUTS,
    FORMAT_NAME,
    Connector,
    ConnectorConfig,
    load_connector,
    save_connector,
)
from .revise import VisionHeadConnector, VisionHeadConnectorConfig, load_release_connector

# Top-level module names of the families' state dicts (omnivideo2.py: vlm_norm, vlm_proj, visual_context_adapter;
# revise.py: vision_head, dm_adapter, visual_context_adapter): a file holding one of them holds a connector.
CONNECTOR_MODULES = ("vlm_proj", "vlm_norm", "visual_context_adapter", "vision_head", "dm_adapter")

__all__ = [
    "BOUNDARY_NAMES",
    "CONNECTOR_KEYS",
    "CONNECTOR_MODULES",
    "CONNECTOR_LAYOUTS",
    "FORMAT_NAME",
    "Connector",
    "ConnectorConfig",
    "ContextConnector",
    "VisionHeadConnector",
    "VisionHeadConnectorConfig",
    "VisualContextAdapter",
    "WanRMSNorm",
    "load_connector",
    "load_release_connector",
    "save_connector",
]
