"""RVE-Dataset pipeline (paper section 3.1): building reasoning-edit triplets from videos and edit pairs.

Stages: `shots` (shot segmentation), `rave` (LLM rewriting of literal instructions with leak checks),
`icvg` (captions, embeddings, sub-clusters and (earlier, later) clip pairs with LLM-written instructions),
`splits` (train / benchmark separated by film); `stages.py` runs each over a manifest through the
resumable sharded runner (`runner.py`), and `python -m revise_core.data` (`__main__.py`) is their command
line. This package sits above the core: it uses the core (VLMs, video, the LLM clients of `llm.py`), and
nothing in the core imports it.
"""
