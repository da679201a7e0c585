"""Evaluation: CMC/mAP/mINP (:mod:`.metrics`), k-reciprocal re-ranking (:mod:`.rerank`) and
AlignedReID's shortest-path local distance (:mod:`.local_distance`)."""
