"""RVE-Bench evaluation (paper section 3.2 / 5.2): VLM-judge scores and video-quality metrics."""
