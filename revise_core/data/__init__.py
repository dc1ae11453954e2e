"""RVE-Dataset pipeline (paper section 3.1): building reasoning-edit triplets from videos and edit pairs.

In place: `shots` (shot segmentation), `rave` (LLM rewriting of literal instructions with leak checks),
`icvg` (sub-clusters and (earlier, later) clip pairs from embeddings), `splits` (train / benchmark
separated by film). Still to come: captioning and SigLIP embedding stages, the ICVG instruction writer,
the resumable sharded runner with stage reports, and the `python -m revise_core.data` command.
"""
