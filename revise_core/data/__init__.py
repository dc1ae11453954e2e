"""RVE-Dataset pipeline (paper section 3.1): building reasoning-edit triplets from videos and edit pairs.

Work in progress: shot segmentation is here; RAVE rewriting, ICVG construction, splits and the
resumable runner are still to come (see the dataset issue).
"""
